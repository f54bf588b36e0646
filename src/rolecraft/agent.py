"""One role-play turn: retrieve statements, build the prompt, generate, clean, remember.

Two prompt styles:
- "chat": a system prompt with the persona, then the dialogue as chat messages;
- "quote" (EGOS): the whole dialogue as a script of quoted lines in one prompt, and the reply
  primed with `Name: "` so the model continues as the character and stops at the closing quote.
History lives in the prompt; when the prompt would outgrow its token budget, the oldest turns are
folded by the LLM into a running summary that stays in the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from .character import Character
from .llm.base import LLM, Message
from .retrieval import Retriever, keyword_hits

Mode = Literal["rag", "all", "none"]  # none: only the name, the no-persona baseline
Style = Literal["chat", "quote"]


@dataclass
class AgentConfig:
    mode: Mode = "rag"
    top_k: int = 5
    rerank: bool = False  # rag: rerank the embedding top-N with the relevance cross-encoder (two-stage)
    style: Style = "chat"
    user_name: str = "User"
    context_budget: int = 1536  # prompt tokens; the reply's max_new_tokens come on top
    keep_recent: int = 2  # turns always kept verbatim when older ones are summarised
    temperature: float = 0.3  # small models drift out of character quickly at higher temperatures
    top_p: float = 0.9
    max_new_tokens: int = 80
    repetition_penalty: float = 1.15  # a 135M model otherwise loops on one phrase within a few dozen tokens
    seed: int | None = None


@dataclass
class Turn:
    user: str
    reply: str
    statements: list[str] = field(default_factory=list)


@dataclass
class Memory:
    summary: str = ""  # running summary of turns no longer in the prompt
    recent: list[Turn] = field(default_factory=list)  # turns kept verbatim in the prompt
    log: list[Turn] = field(default_factory=list)  # every turn, for the caller
    summaries: int = 0  # how many times older turns were folded into the summary


@dataclass
class TurnResult:
    reply: str
    statements: list[str]
    messages: list[Message]  # the exact prompt the reply was generated from
    summarized: bool = False


SYSTEM_TEMPLATE = (
    "You are {name}. Stay in character at all times: speak as {name}, in the first person, "
    "and never mention being an AI or a language model.\n"
    "What is true about {name}:\n{facts}"
)
QUOTE_TEMPLATE = (
    "Below is a conversation between {user} and {name}. Write {name}'s next line only, "
    "as spoken words in quotes. Do not write lines for {user}."
)
SUMMARY_LABEL = "Earlier in this conversation"
SUMMARIZE_PROMPT = (
    "Summarise this conversation between {user} and {name} in at most three sentences. "
    "Keep names, facts, numbers and promises.\n\n{previous}{dialogue}\n\nSummary:"
)


class RolePlayAgent:
    def __init__(
        self,
        character: Character,
        llm: LLM,
        config: AgentConfig | None = None,
        retriever: Retriever | None = None,
    ):
        self.character = character
        self.llm = llm
        self.config = config or AgentConfig()
        self._retriever = retriever
        self.memory = Memory()
        self.last: TurnResult | None = None

    # -- statements --------------------------------------------------------------------------
    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            from .retrieval import EmbeddingRetriever

            reranker = None
            if self.config.rerank:
                from .discriminators import Discriminator

                reranker = Discriminator.pretrained("relevance")
            self._retriever = EmbeddingRetriever(reranker=reranker)
        return self._retriever

    def select_statements(self, message: str) -> list[str]:
        """Unkeyed statements by retrieval (or all of them); keyed (lorebook) ones when a key is mentioned."""
        plain = [s.text for s in self.character.statements if not s.keys]
        keyed = [s for s in self.character.statements if s.keys]
        recent = self.memory.recent[-1].reply if self.memory.recent else ""
        hits = keyword_hits([s.keys for s in keyed], f"{recent}\n{message}")
        if self.config.mode == "none":
            return []
        chosen = plain
        if self.config.mode == "rag" and len(plain) > self.config.top_k:
            chosen = [plain[i] for i in self.retriever.select(plain, message, self.config.top_k)]
        return chosen + [keyed[i].text for i in hits]

    # -- prompts -----------------------------------------------------------------------------
    def build_messages(self, message: str, statements: list[str]) -> list[Message]:
        c, cfg = self.character, self.config
        system = SYSTEM_TEMPLATE.format(name=c.name, facts="\n".join(f"- {s}" for s in statements) or "-")
        if self.memory.summary:
            system += f"\n{SUMMARY_LABEL}: {self.memory.summary}"
        if cfg.style == "chat":
            msgs: list[Message] = [{"role": "system", "content": system}]
            for t in self.memory.recent:
                msgs += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.reply}]
            return msgs + [{"role": "user", "content": message}]
        lines = [QUOTE_TEMPLATE.format(user=cfg.user_name, name=c.name), ""]
        for t in self.memory.recent:
            lines += [quote(cfg.user_name, t.user), quote(c.name, t.reply)]
        lines.append(quote(cfg.user_name, message))
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": "\n".join(lines)},
            {"role": "assistant", "content": f'{c.name}: "'},
        ]

    def _fit_budget(self, message: str, statements: list[str]) -> tuple[list[Message], bool]:
        """Fold the oldest turns into the summary until the prompt fits the token budget."""
        summarized = False
        msgs = self.build_messages(message, statements)
        while self.llm.count_tokens(msgs) > self.config.context_budget and len(self.memory.recent) > 0:
            keep = min(self.config.keep_recent, len(self.memory.recent) - 1)
            old = self.memory.recent[: len(self.memory.recent) - keep]
            self.memory.recent = self.memory.recent[len(old) :]
            self.memory.summary = self.summarize(old)
            self.memory.summaries += 1
            summarized = True
            msgs = self.build_messages(message, statements)
        return msgs, summarized

    def summarize(self, turns: list[Turn]) -> str:
        c, cfg = self.character, self.config
        dialogue = "\n".join(f"{quote(cfg.user_name, t.user)}\n{quote(c.name, t.reply)}" for t in turns)
        previous = f"{SUMMARY_LABEL}: {self.memory.summary}\n" if self.memory.summary else ""
        prompt = SUMMARIZE_PROMPT.format(user=cfg.user_name, name=c.name, previous=previous, dialogue=dialogue)
        text = self.llm.chat([{"role": "user", "content": prompt}], temperature=0.0, max_new_tokens=96)
        return " ".join(text.split()) or self.memory.summary

    # -- the turn ----------------------------------------------------------------------------
    def prepare(self, message: str) -> tuple[list[Message], list[str], bool, dict[str, object]]:
        """Everything a reply needs, without generating it: (prompt, statements, summarised?, sampling).

        Callers that generate elsewhere (a batching server, best-of-n sampling) pass the reply to `commit`.
        """
        message = message.strip()
        statements = self.select_statements(message)
        msgs, summarized = self._fit_budget(message, statements)
        cfg = self.config
        stop = [f"\n{cfg.user_name}:", f"{cfg.user_name}:"]
        if cfg.style == "quote":
            stop.append('"')
        sampling = {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "repetition_penalty": cfg.repetition_penalty,
            "stop": stop,
            "seed": cfg.seed,
        }
        return msgs, statements, summarized, sampling

    def respond(self, message: str) -> TurnResult:
        msgs, statements, summarized, sampling = self.prepare(message)
        reply = self.clean(self.llm.chat(msgs, **sampling))
        return self.commit(message, reply, statements, msgs, summarized)

    def stream(self, message: str) -> Iterator[str]:
        """Yields reply text as it is generated; `self.last` holds the TurnResult afterwards."""
        msgs, statements, summarized, sampling = self.prepare(message)
        raw = ""
        for piece in self.llm.stream(msgs, **sampling):
            raw += piece
            yield piece
        self.last = self.commit(message, self.clean(raw), statements, msgs, summarized)

    def commit(
        self, message: str, reply: str, statements: list[str], msgs: list[Message], summarized: bool
    ) -> TurnResult:
        """Record a finished turn in memory; the next prompt includes it."""
        turn = Turn(message.strip(), reply, statements)
        self.memory.recent.append(turn)
        self.memory.log.append(turn)
        self.last = TurnResult(reply, statements, msgs, summarized)
        return self.last

    def clean(self, text: str) -> str:
        """Cut where the model starts speaking for the user, drop a leading speaker tag, tidy spaces."""
        name, user = self.character.name, self.config.user_name
        cut = re.search(rf"(^|\n|\s){re.escape(user)}\s*:", text)
        if cut:
            text = text[: cut.start()]
        text = re.sub(rf"^\s*{re.escape(name)}\s*:\s*", "", text)
        text = text.strip().strip('"').strip()
        return re.sub(r"[ \t]+", " ", text)

    def reset(self) -> None:
        self.memory = Memory()


def quote(speaker: str, text: str) -> str:
    return f'{speaker}: "{text}"'
