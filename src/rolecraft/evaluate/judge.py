"""An LLM judge behind the one LLM protocol, with strict parsing of its last line.

The judge reasons in free text and must end with `Score: N` (N in 1..7), `Answer: A|B` or `Verdict: in|out`.
Only the last non-empty line counts, only in that exact shape (spaces, a trailing full stop, "/7" and Markdown
bold are tolerated). Anything else is a parse failure: returned as `None`, counted, never guessed.

Priming (on by default): small models rarely end with the asked-for line by themselves, they ramble until the
token limit. So the judgement is made in two calls: the reasoning (cut where the model starts its own label),
then the same conversation with the reasoning plus the label (`Score:`) as an assistant prefill, continued for a
few tokens. The model still has to write the value itself; whatever it writes goes through the same strict
parser. Endpoints that cannot continue a prefill simply answer anew, and their answer is parsed the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..llm.base import LLM, Message
from . import prompts

_SCORE = re.compile(r"^\**\s*score\s*\**\s*:\s*\**\s*([1-7])\s*(/\s*7|out of 7)?\s*\**\s*\.?\s*$", re.IGNORECASE)
_ANSWER = re.compile(r"^\**\s*answer\s*\**\s*:\s*\**\s*([AB])\s*\**\s*\.?\s*$", re.IGNORECASE)
_VERDICT = re.compile(r"^\**\s*verdict\s*\**\s*:\s*\**\s*(in|out)\s*\**\s*\.?\s*$", re.IGNORECASE)


def _last_line(text: str) -> str:
    lines = [ln.strip().strip("`").strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def parse_score(text: str) -> int | None:
    """N from a final line `Score: N` (1..7); None otherwise."""
    m = _SCORE.match(_last_line(text))
    return int(m.group(1)) if m else None


def parse_choice(text: str) -> str | None:
    """'A' or 'B' from a final line `Answer: A|B`; None otherwise."""
    m = _ANSWER.match(_last_line(text))
    return m.group(1).upper() if m else None


def parse_verdict(text: str) -> bool | None:
    """True for `Verdict: out` (breaks character), False for `Verdict: in`; None otherwise."""
    m = _VERDICT.match(_last_line(text))
    return None if m is None else m.group(1).lower() == "out"


@dataclass
class JudgeCall:
    """One judgement: the judge's full text and the parsed value (None: a parse failure)."""

    raw: str
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "ok": self.ok, "raw": self.raw}


@dataclass
class Judge:
    """Sends judge prompts in batches; `tries` > 1 re-asks (sampling) only when the answer did not parse."""

    llm: LLM
    max_new_tokens: int = 192
    temperature: float = 0.0
    tries: int = 1
    batch_size: int = 8
    prime: bool = True  # two calls: reasoning, then the label as a prefill to continue (see the module notes)
    calls: int = field(default=0, init=False)

    def _generate(self, convs: list[list[Message]], label: str, temperature: float, seed: int) -> list[str]:
        if not self.prime:
            return self.llm.chat_batch(convs, temperature=temperature, max_new_tokens=self.max_new_tokens, seed=seed)
        reasons = self.llm.chat_batch(convs, temperature=temperature, max_new_tokens=self.max_new_tokens,
                                      seed=seed, stop=[f"{label}:", f"{label.lower()}:", f"**{label}"])
        heads = [f"{r.rstrip()}\n{label}:" for r in reasons]
        primed = [c + [{"role": "assistant", "content": h}] for c, h in zip(convs, heads, strict=True)]
        tails = self.llm.chat_batch(primed, temperature=0.0, max_new_tokens=6, seed=seed, stop=["\n"])
        return [h + t for h, t in zip(heads, tails, strict=True)]

    def ask(self, conversations: Sequence[list[Message]], parser: Any, label: str = "Score") -> list[JudgeCall]:
        results: list[JudgeCall | None] = [None] * len(conversations)
        todo = list(range(len(conversations)))
        for attempt in range(self.tries):
            temperature = self.temperature if attempt == 0 else max(self.temperature, 0.7)
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                texts = self._generate([conversations[i] for i in chunk], label, temperature, attempt)
                self.calls += len(chunk)
                for i, text in zip(chunk, texts, strict=True):
                    results[i] = JudgeCall(text, parser(text))
            todo = [i for i in todo if not results[i].ok]  # type: ignore[union-attr]
            if not todo:
                break
        return [r for r in results if r is not None]

    # -- the prompts ------------------------------------------------------------------------------
    @staticmethod
    def dimension_prompt(name: str, profile: str, transcript: str, dimension: str) -> list[Message]:
        title, criterion = prompts.DIMENSIONS[dimension]
        user = prompts.JUDGE_TEMPLATE.format(name=name, profile=profile, transcript=transcript, title=title,
                                             criterion=criterion.format(name=name))
        return [{"role": "system", "content": prompts.JUDGE_SYSTEM.format(name=name)},
                {"role": "user", "content": user}]

    def score_dimensions(self, name: str, profile: str, transcripts: Sequence[str],
                         dimensions: Sequence[str]) -> list[dict[str, JudgeCall]]:
        """One judgement per (transcript, dimension): one call each, so a small judge sees one task at a time."""
        convs = [self.dimension_prompt(name, profile, t, d) for t in transcripts for d in dimensions]
        calls = self.ask(convs, parse_score)
        k = len(dimensions)
        return [dict(zip(dimensions, calls[i * k : (i + 1) * k], strict=True)) for i in range(len(transcripts))]

    def score_apc(self, name: str, statements: Sequence[str], items: Sequence[tuple[str, str]],
                  user: str = "User") -> list[JudgeCall]:
        facts = "\n".join(f"- {s}" for s in statements)
        convs = [[{"role": "user", "content": prompts.APC_JUDGE_TEMPLATE.format(
            name=name, facts=facts, user=user, query=q, reply=r)}] for q, r in items]
        return self.ask(convs, parse_score)

    def pick_real(self, name: str, pairs: Sequence[tuple[str, str]]) -> list[JudgeCall]:
        convs = [[{"role": "user", "content": prompts.CONSISTENCY_TEMPLATE.format(name=name, a=a, b=b)}]
                 for a, b in pairs]
        return self.ask(convs, parse_choice, "Answer")

    def pick_better(self, name: str, items: Sequence[tuple[str, str, str]], user: str = "User") -> list[JudgeCall]:
        convs = [[{"role": "user", "content": prompts.QUALITY_TEMPLATE.format(
            name=name, user=user, query=q, a=a, b=b)}] for q, a, b in items]
        return self.ask(convs, parse_choice, "Answer")

    def out_of_character(self, name: str, items: Sequence[tuple[str, str]], user: str = "User") -> list[JudgeCall]:
        convs = [[{"role": "user", "content": prompts.OOC_TEMPLATE.format(
            name=name, user=user, query=q, reply=r)}] for q, r in items]
        return self.ask(convs, parse_verdict, "Verdict")


def load_judge_llm(backend: str, model: str | None, base_url: str | None, concurrency: int = 4) -> LLM:
    """The judge's LLM: any backend of the protocol (an OpenAI-compatible endpoint in real use)."""
    from ..llm import load_llm

    # a long timeout: a local server batching judge requests on a busy CPU can take minutes per batch
    kwargs: dict[str, Any] = ({"base_url": base_url, "concurrency": concurrency, "timeout": 900}
                              if backend == "openai" else {})
    return load_llm(backend, model, **kwargs)


@contextmanager
def served_local_judge(model: str | None = None, name: str = "judge") -> Iterator[tuple[str, str]]:
    """A local model served on loopback through the OpenAI-compatible API; yields (base_url, model id).

    Lets the embedded model act as judge/interviewer exactly as a remote endpoint would (the same client, the
    same request path); the server batches concurrent judge requests.
    """
    from ..llm.base import Sampling
    from ..llm.local import LocalLLM
    from ..server import create_app, running_server

    # greedy with a mild repetition penalty: a 135M model otherwise repeats its reasoning until the token limit
    llm = LocalLLM(model, sampling=Sampling(temperature=0.0, repetition_penalty=1.1))
    with running_server(create_app({name: llm})) as url:
        yield url, name
