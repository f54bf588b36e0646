"""The role-play agent as the server runs it: prompt preparation on request threads, generation in the engine."""

from __future__ import annotations

import re
import threading
from dataclasses import replace

from ..agent import AgentConfig, RolePlayAgent
from ..llm.base import Message, Sampling
from ..retrieval import Retriever
from .protocol import ChatRequest


class ServedAgent(RolePlayAgent):
    """The agent with the client's sampling wishes folded in; the server generates between prepare and commit."""

    def prepare_request(
        self, message: str, extra_stop: list[str]
    ) -> tuple[list[Message], list[str], bool, Sampling]:
        """Statements, memory folding and the prompt; the reply's sampling with the client's stops added."""
        msgs, statements, summarized, sampling = self.prepare(message)
        stop = [*sampling.pop("stop"), *extra_stop]  # type: ignore[misc]
        return msgs, statements, summarized, Sampling(stop=tuple(stop), **sampling)  # type: ignore[arg-type]


def agent_config(base: AgentConfig, req: ChatRequest, max_tokens: int) -> AgentConfig:
    """The server's agent settings with what this request asks for (max tokens capped)."""
    wanted = req.max_completion_tokens or req.max_tokens or base.max_new_tokens
    return replace(
        base,
        temperature=base.temperature if req.temperature is None else req.temperature,
        top_p=base.top_p if req.top_p is None else req.top_p,
        max_new_tokens=min(wanted, max_tokens),
        seed=base.seed if req.seed is None else req.seed,
        repetition_penalty=base.repetition_penalty if req.repetition_penalty is None else req.repetition_penalty,
    )


def client_stops(req: ChatRequest) -> list[str]:
    if req.stop is None:
        return []
    return [req.stop] if isinstance(req.stop, str) else list(req.stop)


class SharedRetriever:
    """One embedding model for all requests, loaded on first use; one request at a time uses it."""

    def __init__(self, inner: Retriever | None = None):
        self._inner = inner
        self._lock = threading.Lock()

    def select(self, statements: list[str], query: str, k: int) -> list[int]:
        with self._lock:
            if self._inner is None:
                from ..retrieval import EmbeddingRetriever

                self._inner = EmbeddingRetriever()
            return self._inner.select(statements, query, k)


class LeadCleaner:
    """Drops from the start of a streamed reply what `RolePlayAgent.clean` drops: spaces, a quote, `Name:`."""

    def __init__(self, name: str):
        self.name = name
        self.head: str | None = ""  # None once the start is settled
        self._tag = re.compile(rf"^\s*{re.escape(name)}\s*:\s*")

    def feed(self, piece: str) -> str:
        if self.head is None:
            return piece
        self.head += piece
        text = self.head.lstrip()
        if len(text) <= len(self.name) + 1 and f"{self.name}:".startswith(text.rstrip()):
            return ""  # may still turn out to be the speaker tag
        return self._settle()

    def flush(self) -> str:
        return "" if self.head is None else self._settle()

    def _settle(self) -> str:
        text = self._tag.sub("", self.head or "")
        self.head = None
        return text.lstrip().lstrip('"').lstrip()
