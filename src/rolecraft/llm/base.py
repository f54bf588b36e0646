"""The one LLM protocol every component talks to.

A conversation is a list of OpenAI-style messages. If the last message has role "assistant", the
backend *continues* it instead of starting a new reply (the prefill that EGOS' quoted speech needs:
the reply is primed with `Name: "` and cut at the closing quote).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 200
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # >1 discourages repeating earlier tokens (local and llamacpp backends; OpenAI's API has no such field).
    repetition_penalty: float = 1.0

    def with_(self, **overrides: Any) -> Sampling:
        """A copy with the given fields replaced (None values are ignored; `stop` accepts a list)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "stop" in clean:
            stop = clean["stop"]
            clean["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return replace(self, **clean)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class LLM(Protocol):
    """Chat messages in, text out. Implementations: local (transformers), llamacpp, openai."""

    name: str
    context_window: int

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str: ...

    def chat_batch(
        self, conversations: list[list[Message]], sampling: Sampling | None = None, **overrides: Any
    ) -> list[str]: ...

    def stream(
        self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any
    ) -> Iterator[str]: ...

    def count_tokens(self, messages: list[Message]) -> int: ...


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; returns (text, whether a stop was hit)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut < len(text)


class StopStream:
    """Applies stop strings to a stream of text pieces, holding back a tail that may start a stop."""

    def __init__(self, stop: tuple[str, ...] | list[str]):
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buffer = ""
        self.done = False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self.buffer += piece
        text, hit = cut_at_stop(self.buffer, self.stop)
        if hit:
            self.done = True
            self.buffer = ""
            return text
        keep = self.hold
        out, self.buffer = (self.buffer[:-keep], self.buffer[-keep:]) if keep else (self.buffer, "")
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.done else self.buffer), ""
        return out


class BaseLLM:
    """Shared behaviour: sampling defaults, batch via loop, chat via stream where a backend prefers."""

    name: str = "llm"
    context_window: int = 2048

    def __init__(self, sampling: Sampling | None = None):
        self.sampling = sampling or Sampling()

    def _sampling(self, sampling: Sampling | None, overrides: dict[str, Any]) -> Sampling:
        return (sampling or self.sampling).with_(**overrides)

    def chat_batch(
        self, conversations: list[list[Message]], sampling: Sampling | None = None, **overrides: Any
    ) -> list[str]:
        return [self.chat(c, sampling, **overrides) for c in conversations]

    def count_tokens(self, messages: list[Message]) -> int:
        # A rough default (about 4 characters a token) for backends without a tokenizer.
        return sum(len(m.get("content", "")) // 4 + 4 for m in messages)


def split_prefill(messages: list[Message]) -> tuple[list[Message], str]:
    """Separate a trailing assistant message (text to continue) from the conversation."""
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], messages[-1].get("content", "")
    return messages, ""


@dataclass
class ChatResult:
    text: str
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
