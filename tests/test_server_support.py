"""Shared pieces for the server tests (no tests here): a scripted model, a test character, a fake scorer.

The scripted model stands in for generation only in control-flow tests (queueing, sessions, errors,
cancellation); tests that claim to check generation use the embedded model. Run as a script, this
module serves the character app on a free port (printed on stdout) for the SIGKILL test.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rolecraft.apc import APCReport, StatementRow
from rolecraft.character import Character, Statement
from rolecraft.llm.base import BaseLLM, Message, Sampling, StopStream
from rolecraft.server.characters import ServerConfig, create_character_app
from rolecraft.workspace import Workspace

FACTS = [
    "Captain Ada Vell commands the airship Kestrel.",
    "Captain Ada Vell is afraid of deep water.",
    "Captain Ada Vell keeps a pet ferret named Bolt.",
    "Captain Ada Vell was born in the mountain city of Orrin.",
    "Captain Ada Vell drinks coffee with cardamom.",
    "Captain Ada Vell never flies on Sundays.",
]


def ada() -> Character:
    return Character("Ada Vell", [Statement(f) for f in FACTS], greeting="Welcome aboard the Kestrel, {{user}}.")


class ScriptedLLM(BaseLLM):
    """Replies `Reply <k>: I heard <last user words>` word by word; records every generation prompt.

    Summary requests (from the agent's memory) get a fixed summary. `delay` slows streaming per word;
    `cancelled` counts streams closed before their end (a client that left).
    """

    name = "scripted"

    def __init__(self, delay: float = 0.0):
        super().__init__(Sampling(max_new_tokens=60))
        self.delay = delay
        self.prompts: list[list[Message]] = []
        self.samplings: list[Sampling] = []
        self.cancelled = 0
        self.finished = 0
        self._lock = threading.Lock()

    def _words(self, messages: list[Message], s: Sampling) -> list[str]:
        if "Summary:" in messages[-1]["content"]:
            return ["SUMMARY:", "they", "talked", "about", "the", "ship."]
        with self._lock:
            self.prompts.append(messages)
            self.samplings.append(s)
            k = len(self.prompts)
        heard = messages[-1]["content"].split()[:8]
        words = [f"Reply {k}:", "I", "heard", *heard, "END", "and", "more", "words", "after", "that"]
        return words[: s.max_new_tokens]

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        s = self._sampling(sampling, overrides)
        return "".join(self._stream_words(self._words(messages, s), s))

    def chat_batch(
        self, conversations: list[list[Message]], sampling: Sampling | None = None, **overrides: Any
    ) -> list[str]:
        return [self.chat(c, sampling, **overrides) for c in conversations]

    def stream(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> Iterator[str]:
        s = self._sampling(sampling, overrides)
        done = False
        try:
            for piece in self._stream_words(self._words(messages, s), s):
                if self.delay:
                    time.sleep(self.delay)
                yield piece
            done = True
        finally:
            with self._lock:
                if done:
                    self.finished += 1
                else:
                    self.cancelled += 1

    @staticmethod
    def _stream_words(words: list[str], s: Sampling) -> Iterator[str]:
        stops = StopStream(s.stop)
        for i, w in enumerate(words):
            out = stops.feed(w if i == 0 else " " + w)
            if out:
                yield out
            if stops.done:
                return
        if tail := stops.flush():
            yield tail

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"].split()) + 1 for m in messages)


class FirstK:
    """Retriever stand-in: the first k statements."""

    def select(self, statements: list[str], query: str, k: int) -> list[int]:
        return list(range(min(k, len(statements))))


class FakeScorer:
    """APC-shaped reports from word overlap, so the endpoint's plumbing is testable without the models."""

    def __init__(self) -> None:
        self.calls = 0

    def report(self, statements: list[str], query: str, responses: list[str], character: str | None = None) -> Any:
        self.calls += 1
        out = []
        ignore = {"captain", "the", "a", "an", "of", "is", "in", "and", "to", *words_of(character or "")}
        for reply in responses:
            rows = []
            for s in statements:
                words = words_of(s) - ignore
                relevant = 0.9 if words & words_of(query) else 0.1
                contradicted = 0.8 if "not" in words_of(reply) else 0.1
                entailed = 0.8 if words & words_of(reply) else 0.1
                c = (1 - relevant) * (1 - contradicted) + relevant * entailed
                rows.append(StatementRow(s, relevant, entailed, 1 - entailed - 0.05, contradicted, relevant > 0.5, c))
            total = sum(r.contribution for r in rows)
            out.append(APCReport(reply, total, total / max(1, len(rows)), rows))
        return out


def words_of(text: str) -> set[str]:
    return {w.strip("?.,!;:'\"").lower() for w in text.split()}


def workspace(root: Path) -> Workspace:
    ws = Workspace(root / "workspace")
    if not ws.exists("ada-vell"):
        ws.add(ada())
    return ws


def scripted_app(root: Path, llm: BaseLLM, config: ServerConfig | None = None, scorer: Any = None) -> Any:
    return create_character_app(
        llm, root / "sessions.sqlite3", workspace(root), config or ServerConfig(),
        scorer=(lambda: scorer) if scorer else None, retriever=FirstK(),
    )  # fmt: skip


def main(root: str, delay: str = "0") -> None:
    """Serve the scripted character app; prints the port, then serves until killed."""
    import socket

    import uvicorn

    app = scripted_app(Path(root), ScriptedLLM(delay=float(delay)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main(*sys.argv[1:])
