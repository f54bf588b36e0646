"""Strict judge parsing, failure counting, re-asking and priming (a scripted LLM: control flow only), and the
embedded model judging through the OpenAI-compatible path (plumbing, not judgement quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rolecraft.cli import app
from rolecraft.evaluate.interview import parse_question
from rolecraft.evaluate.judge import Judge, parse_choice, parse_score, parse_verdict
from rolecraft.llm.base import BaseLLM, Message, Sampling, split_prefill


@pytest.mark.parametrize("text,expected", [
    ("The answers are vivid.\nScore: 5", 5),
    ("Reasoning...\n\n**Score:** 6\n", 6),
    ("ok\nscore: 3.", 3),
    ("ok\nScore: 7/7", 7),
    ("ok\nScore: 2 out of 7", 2),
    ("ok\n`Score: 4`", 4),
    ("ok\nScore: 9/10", None),  # out of range
    ("ok\nScore: 4.5/5", None),
    ("ok\nScore: N", None),  # the placeholder copied
    ("Score: 5\nbut then more text", None),  # not the last line
    ("I would give it a 5.", None),  # no label: never guessed
    ("ok\nScore: 0", None),
    ("", None),
])
def test_parse_score_is_strict(text: str, expected: int | None) -> None:
    assert parse_score(text) == expected


def test_parse_choice_and_verdict() -> None:
    assert parse_choice("Line B sounds real.\nAnswer: B") == "B"
    assert parse_choice("hmm\n**Answer:** a") == "A"
    assert parse_choice("Answer: C") is None and parse_choice("B") is None
    assert parse_verdict("It speaks as an AI.\nVerdict: out") is True
    assert parse_verdict("fine\nVerdict: in") is False
    assert parse_verdict("Verdict: maybe") is None


def test_parse_question() -> None:
    assert parse_question("Interviewer: What did your father teach you? And more.") == "What did your father teach you?"
    assert parse_question('"Why Vienna?"') == "Why Vienna?"
    assert parse_question("Why?") is None  # too short to be a real follow-up
    assert parse_question("1. Question: How did deafness change your music?") == "How did deafness change your music?"
    assert parse_question("Tell me more.") is None and parse_question("") is None


class Scripted(BaseLLM):
    """Answers from a queue, per call; records what it was asked. For control flow only."""

    def __init__(self, answers: list[str]):
        super().__init__(Sampling())
        self.answers, self.seen = list(answers), []

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        self.seen.append((messages, overrides))
        return self.answers.pop(0)


def test_failures_are_counted_and_only_failures_are_asked_again() -> None:
    llm = Scripted(["good\nScore: 6", "rambling without a score", "fine\nScore: 9", "second try\nScore: 2",
                    "still nothing"])
    judge = Judge(llm, prime=False, tries=2, batch_size=2)
    calls = judge.ask([[{"role": "user", "content": f"q{i}"}] for i in range(3)], parse_score)
    assert [c.value for c in calls] == [6, 2, None]
    assert [c.ok for c in calls] == [True, True, False]
    assert judge.calls == 5  # 3 first tries + the 2 failures again
    assert [m[0]["content"] for m, _ in llm.seen[3:]] == ["q1", "q2"]
    assert llm.seen[3][1]["temperature"] >= 0.7  # a retry samples instead of repeating the greedy answer


def test_priming_continues_the_reasoning_from_the_label() -> None:
    llm = Scripted(["The answer recalls his father.", " 5"])
    call = Judge(llm, prime=True).ask([[{"role": "user", "content": "judge this"}]], parse_score)[0]
    assert call.value == 5 and call.raw == "The answer recalls his father.\nScore: 5"
    first, second = llm.seen
    assert "Score:" in first[1]["stop"]
    convo, prefill = split_prefill(second[0])
    assert prefill == "The answer recalls his father.\nScore:" and convo[-1]["content"] == "judge this"
    llm = Scripted(["reasoning", " excellent"])  # a primed judge that still does not give a number
    assert Judge(llm).ask([[{"role": "user", "content": "x"}]], parse_score)[0].value is None


def test_dimension_prompts_are_one_call_per_dimension() -> None:
    llm = Scripted([f"r\nScore: {n}" for n in (1, 2, 3, 4, 5, 6, 7, 1)])
    out = Judge(llm, prime=False).score_dimensions("Ludwig", "A composer.", ["t1", "t2"],
                                                   ["memory", "values", "personality", "hallucination"])
    assert [{d: c.value for d, c in o.items()} for o in out] == [
        {"memory": 1, "values": 2, "personality": 3, "hallucination": 4},
        {"memory": 5, "values": 6, "personality": 7, "hallucination": 1}]
    assert "Ludwig" in llm.seen[0][0][0]["content"] and "memory" in llm.seen[0][0][1]["content"]


@pytest.mark.model
def test_interview_command_with_the_embedded_judge_served_over_http(tmp_path: Path, shared_data: Path) -> None:
    """Plumbing, not judgement quality: answers, interviewer follow-ups and judgements through the OpenAI path."""
    folder = shared_data / "interviews"
    args = ["eval", "interview", str(shared_data / "characters" / "character_llm" / "wiki_Beethoven.txt"),
            "--questions", str(folder / "generated_agent_interview_Beethoven.json"),
            "--multi", str(folder / "generated_agent_interview_for_multiturn_Beethoven.json"),
            "--limit", "1", "--multi-limit", "1", "--rounds", "2", "--max-new-tokens", "12",
            "--judge-max-tokens", "16", "--serve-judge", "--out", str(tmp_path), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["kind"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    single, multi = rows["single"], rows["multi"]
    assert single["topic_id"].startswith("topic-") and single["answer"].strip()
    assert set(single["scores"]) == {"memory", "values", "personality", "hallucination"}
    assert set(multi["scores"]) == {"memory", "values", "personality", "hallucination", "stability"}
    assert len(multi["turns"]) == 2 and multi["turns"][1]["question"].strip()
    for call in [*single["scores"].values(), *multi["scores"].values()]:
        assert "\nScore:" in call["raw"]  # the primed second call went through the server
        assert call["ok"] == (call["value"] is not None) and (call["value"] is None or 1 <= call["value"] <= 7)
    assert "parse failures" in (tmp_path / "report.md").read_text(encoding="utf-8")
