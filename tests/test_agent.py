"""The role-play turn: statement selection, prompt styles, cleaning, and summarising memory.

The control-flow tests use a scripted stand-in LLM (it records prompts and counts words as tokens);
the last test runs the real embedded model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rolecraft.agent import SUMMARY_LABEL, AgentConfig, RolePlayAgent
from rolecraft.character import Character, Statement
from rolecraft.llm.base import BaseLLM, Message, Sampling


class ScriptedLLM(BaseLLM):
    """Returns queued replies; summary requests get a fixed summary. Records every prompt."""

    name = "scripted"

    def __init__(self, replies: list[str]):
        super().__init__()
        self.replies = list(replies)
        self.prompts: list[list[Message]] = []
        self.summary_calls = 0

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        self.prompts.append(messages)
        if "Summary:" in messages[-1]["content"]:
            self.summary_calls += 1
            return f"SUMMARY-{self.summary_calls}: the user greeted Mira and asked about the cat."
        return self.replies.pop(0) if self.replies else "Hm."

    def stream(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> Iterator[str]:
        text = self.chat(messages, sampling, **overrides)
        for i in range(0, len(text), 3):
            yield text[i : i + 3]

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"].split()) for m in messages)


class FirstK:
    """Retriever stand-in: the first k statements."""

    def select(self, statements: list[str], query: str, k: int) -> list[int]:
        return list(range(min(k, len(statements))))


@pytest.fixture
def mira() -> Character:
    facts = [
        "Mira Holloway keeps the lighthouse on Skerry Island.",
        "Mira Holloway has a grey cat named Pilot.",
        "Mira Holloway drinks black tea every evening.",
        "Mira Holloway is 52 years old.",
    ]
    lore = Statement("The Skerry light was built in 1871.", keys=["history", "built"], source="lorebook")
    return Character("Mira Holloway", [Statement(f) for f in facts] + [lore])


def test_rag_mode_takes_top_k_and_keyed_statements_only_when_mentioned(mira: Character) -> None:
    agent = RolePlayAgent(mira, ScriptedLLM([]), AgentConfig(mode="rag", top_k=2), retriever=FirstK())
    assert agent.select_statements("hi") == mira.statement_texts[:2]
    chosen = agent.select_statements("Tell me the history of the light")
    assert chosen[-1] == "The Skerry light was built in 1871."
    all_mode = RolePlayAgent(mira, ScriptedLLM([]), AgentConfig(mode="all"), retriever=FirstK())
    assert all_mode.select_statements("hi") == mira.statement_texts[:4]


def test_rerank_option_retrieves_in_two_stages(mira: Character) -> None:
    from rolecraft.discriminators import Discriminator

    agent = RolePlayAgent(mira, ScriptedLLM([]), AgentConfig(mode="rag", top_k=1, rerank=True))
    reranker = agent.retriever.reranker
    assert isinstance(reranker, Discriminator) and reranker.task == "relevance"
    assert agent.select_statements("What is the name of your cat?") == ["Mira Holloway has a grey cat named Pilot."]


def test_turn_returns_reply_and_the_statements_it_was_given(mira: Character) -> None:
    llm = ScriptedLLM(["I keep the light, love."])
    agent = RolePlayAgent(mira, llm, AgentConfig(top_k=2), retriever=FirstK())
    result = agent.respond("Who are you?")
    assert result.reply == "I keep the light, love."
    assert result.statements == mira.statement_texts[:2]
    system = llm.prompts[-1][0]["content"]
    assert all(s in system for s in result.statements)
    assert mira.statement_texts[3] not in system


def test_reply_that_speaks_for_the_user_is_cut(mira: Character) -> None:
    llm = ScriptedLLM(["Mira Holloway: Pilot is asleep.\nUser: Can I pet him?\nMira: Yes."])
    agent = RolePlayAgent(mira, llm, retriever=FirstK())
    assert agent.respond("Where is the cat?").reply == "Pilot is asleep."


def test_quote_style_primes_the_reply_and_keeps_history_in_one_prompt(mira: Character) -> None:
    llm = ScriptedLLM(["Good evening to you.", "Pilot, my cat."])
    agent = RolePlayAgent(mira, llm, AgentConfig(style="quote"), retriever=FirstK())
    agent.respond("Good evening!")
    agent.respond("Who is that?")
    prompt = llm.prompts[-1]
    assert prompt[-1] == {"role": "assistant", "content": 'Mira Holloway: "'}
    script = prompt[1]["content"]
    assert 'User: "Good evening!"' in script and 'Mira Holloway: "Good evening to you."' in script
    assert script.rstrip().endswith('User: "Who is that?"')


def test_summary_is_triggered_and_enters_the_next_prompt(mira: Character) -> None:
    long_reply = "The sea was rough today and the fog horn sounded for hours " * 3
    llm = ScriptedLLM([long_reply] * 6)
    cfg = AgentConfig(top_k=2, context_budget=150, keep_recent=1)
    agent = RolePlayAgent(mira, llm, cfg, retriever=FirstK())
    summarized = [agent.respond(f"Tell me about day {i}").summarized for i in range(5)]
    assert any(summarized) and llm.summary_calls >= 1
    assert agent.memory.summary.startswith("SUMMARY-")
    last_system = llm.prompts[-1][0]["content"]
    assert f"{SUMMARY_LABEL}: {agent.memory.summary}" in last_system
    assert len(agent.memory.recent) < 5 and len(agent.memory.log) == 5
    assert llm.count_tokens(agent.last.messages) <= cfg.context_budget


def test_stream_yields_the_reply_and_records_the_turn(mira: Character) -> None:
    agent = RolePlayAgent(mira, ScriptedLLM(["Tea is brewing."]), retriever=FirstK())
    assert "".join(agent.stream("Evening plans?")) == "Tea is brewing."
    assert agent.last.reply == "Tea is brewing." and agent.memory.log[-1].user == "Evening plans?"
    agent.reset()
    assert agent.memory.log == [] and agent.memory.summary == ""


@pytest.mark.model
def test_three_turns_with_the_embedded_model(local_llm: Any, mira: Character) -> None:
    cfg = AgentConfig(top_k=2, max_new_tokens=24, seed=3, context_budget=400)
    agent = RolePlayAgent(mira, local_llm, cfg)
    for message in ["Hello, who are you?", "Do you have a pet?", "What do you drink at night?"]:
        result = agent.respond(message)
        assert result.reply.strip(), f"empty reply to {message!r}"
        assert len(result.statements) == 2
    assert len(agent.memory.log) == 3
