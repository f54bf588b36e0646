"""One worker thread per served model, a bounded admission count, and batching of waiting generations.

A model object holds one set of weights and caches and is not thread-safe (nor is its tokenizer), so
every call into it (token counts, summaries, generations) runs on the engine's worker thread.
Requests are admitted up to `max_pending`; past that `admit` raises `Busy` (HTTP 429, Retry-After).
Generations that wait together run as one batch where the backend allows it (the local transformers
backend, see `batching.py`); elsewhere they run one after another. A cancelled job (its client left)
stops at its next token.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from ..llm.base import LLM, Message, Sampling, split_prefill
from .batching import MIN_TEMPERATURE, LocalBatcher

T = TypeVar("T")
_LOCKS: dict[int, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def model_lock(llm: LLM) -> threading.RLock:
    """One lock per model object, shared by every engine (two apps may serve one loaded model)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(llm), threading.RLock())


class Busy(Exception):
    """The admission bound is reached; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"busy; retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass
class RowResult:
    """One generated sequence (one choice)."""

    text: str = ""
    finish_reason: str | None = None  # stop | length | cancelled
    completion_tokens: int = 0


class Job:
    """A generation of `n` choices for one prompt; the worker fills it, the event loop reads it."""

    def __init__(self, messages: list[Message], sampling: Sampling, n: int = 1, stream: bool = False):
        self.messages, self.sampling, self.n, self.stream = messages, sampling, n, stream
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[str, int, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.rows = [RowResult() for _ in range(n)]
        self.prompt_tokens = 0
        self._ended = False

    def batch_key(self) -> tuple[Any, ...]:
        s = self.sampling  # only rows sampled alike can share a generate() call
        if s.temperature < MIN_TEMPERATURE:
            return ("greedy", s.repetition_penalty)
        return (s.temperature, s.top_p, s.seed, s.repetition_penalty)

    # -- worker side -------------------------------------------------------------------------
    def _put(self, event: tuple[str, int, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down): stop generating
            self.cancelled.set()

    def piece(self, index: int, text: str) -> None:
        self.rows[index].text += text
        self._put(("piece", index, text))

    def finish(self, index: int, reason: str, tokens: int) -> None:
        row = self.rows[index]
        row.finish_reason, row.completion_tokens = reason, tokens

    def fail(self, exc: BaseException) -> None:
        self._put(("error", -1, exc))

    def end(self) -> None:
        self._put(("end", -1, None))

    # -- event-loop side ---------------------------------------------------------------------
    def cancel(self) -> None:
        self.cancelled.set()

    async def pieces(self) -> AsyncIterator[tuple[int, str]]:
        """(choice index, text) as generated; raises what generation raised."""
        while not self._ended:
            kind, index, value = await self.events.get()
            if kind == "piece":
                yield index, value
            elif kind == "error":
                self._ended = True
                raise value
            else:
                self._ended = True

    async def wait(self) -> list[RowResult]:
        async for _ in self.pieces():
            pass
        return self.rows


class Ticket:
    """An admitted request: counts against the bound until released (idempotent)."""

    def __init__(self, engine: Engine):
        self.engine, self.preparing, self.released = engine, True, False

    def submitted(self) -> None:
        with self.engine._lock:
            if self.preparing:
                self.preparing = False
                self.engine.preparing -= 1

    def release(self) -> None:
        self.submitted()
        with self.engine._lock:
            if not self.released:
                self.released = True
                self.engine.active -= 1

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Engine:
    def __init__(self, llm: LLM, max_pending: int = 32, max_batch: int = 16, batch_wait_s: float = 0.2):
        self.llm = llm
        self.max_pending, self.max_batch, self.batch_wait_s = max_pending, max_batch, batch_wait_s
        # The tokenizer is not thread-safe either; with it under its own lock, prompts can be measured
        # on request threads while a batch generates (the batcher takes the lock between steps).
        self.tokenizer_lock = threading.Lock()
        self.batcher = LocalBatcher(llm, self.tokenizer_lock) if LocalBatcher.supports(llm) else None
        self.active = 0  # admitted requests not yet released
        self.preparing = 0  # admitted requests that have not submitted their generation yet
        self.batches = 0  # generate() calls so far, and the rows they held: for tests and benchmarks
        self.batched_rows = 0
        self._lock = threading.Lock()
        self._seconds = 2.0  # running average of one batch, for Retry-After
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"rolecraft-model-{llm.name}", daemon=True)
        self._thread.start()

    # -- admission ---------------------------------------------------------------------------
    def admit(self) -> Ticket:
        with self._lock:
            if self.active >= self.max_pending:
                waves = math.ceil(self.active / self.max_batch)
                raise Busy(max(1, min(60, math.ceil(self._seconds * waves))))
            self.active += 1
            self.preparing += 1
        return Ticket(self)

    # -- work for the model thread -----------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the model thread and return its result (blocks the calling thread)."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        future: Future[T] = Future()
        self._inbox.put((fn, args, kwargs, future))
        return future.result()

    def count_tokens(self, messages: list[Message]) -> int:
        if self.batcher is not None:
            with self.tokenizer_lock:
                return self.llm.count_tokens(messages)
        return self.call(self.llm.count_tokens, messages)

    def submit(
        self, messages: list[Message], sampling: Sampling, n: int = 1, stream: bool = False,
        ticket: Ticket | None = None,
    ) -> Job:  # fmt: skip
        """Queue a generation; call from the event loop. Read the result from the returned job."""
        job = Job(messages, sampling, n, stream)
        if ticket:
            ticket.submitted()
        self._inbox.put(job)
        return job

    def close(self) -> None:
        self._inbox.put(None)

    # -- the worker --------------------------------------------------------------------------
    def _work(self) -> None:
        backlog: deque[Job] = deque()
        while True:
            if not backlog:
                item = self._inbox.get()
                if item is None:
                    return
                self._handle(item, backlog)
                if not backlog:
                    continue
            if not self._gather(backlog):
                return
            self._run(self._take(backlog))

    def _handle(self, item: Any, backlog: deque[Job]) -> None:
        if isinstance(item, Job):
            backlog.append(item)
            return
        fn, args, kwargs, future = item
        if not future.set_running_or_notify_cancel():
            return
        try:
            with model_lock(self.llm):
                future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    def _gather(self, backlog: deque[Job]) -> bool:
        """Wait briefly for requests still preparing their prompt, so they join this batch.

        Returns False when the engine was closed meanwhile.
        """
        if self.batcher is None:
            return True
        # Wait while requests are still preparing, up to `batch_wait_s` after the last arrival and
        # five times that overall: a burst of requests prepares one after another, not all at once.
        start = last = time.monotonic()
        while sum(j.n for j in backlog) < self.max_batch:
            with self._lock:
                preparing = self.preparing
            remaining = min(last + self.batch_wait_s, start + 5 * self.batch_wait_s) - time.monotonic()
            wait = preparing > 0 and remaining > 0
            try:
                item = self._inbox.get(timeout=remaining) if wait else self._inbox.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                for job in backlog:
                    job.end()
                return False
            if isinstance(item, Job):
                last = time.monotonic()
            self._handle(item, backlog)
        return True

    def _take(self, backlog: deque[Job]) -> list[Job]:
        first = backlog.popleft()
        if self.batcher is None:
            return [first]
        batch, rows, later = [first], first.n, deque[Job]()
        while backlog:
            job = backlog.popleft()
            if job.batch_key() == first.batch_key() and rows + job.n <= self.max_batch:
                batch.append(job)
                rows += job.n
            else:
                later.append(job)
        backlog.extend(later)
        return batch

    def _run(self, batch: list[Job]) -> None:
        live = [j for j in batch if not j.cancelled.is_set()]
        start = time.monotonic()
        try:
            if live:
                with model_lock(self.llm):
                    if self.batcher is not None:
                        self.batcher.generate(live)
                    else:
                        self._generate_one(live[0])
                self.batches += 1
                self.batched_rows += sum(j.n for j in live)
        except BaseException as exc:
            for job in live:
                job.fail(exc)
        finally:
            for job in batch:
                job.end()
        self._seconds = 0.7 * self._seconds + 0.3 * (time.monotonic() - start)

    def _generate_one(self, job: Job) -> None:
        """Any backend: stream (n=1) or chat/chat_batch; token counts from the model's own counting."""
        llm, s = self.llm, job.sampling
        job.prompt_tokens = llm.count_tokens(job.messages)
        if job.stream and job.n == 1:
            pieces = llm.stream(job.messages, s)
            try:
                for piece in pieces:
                    if job.cancelled.is_set():
                        job.finish(0, "cancelled", 0)
                        return
                    job.piece(0, piece)
            finally:
                close = getattr(pieces, "close", None)
                if close:
                    close()
        else:
            texts = [llm.chat(job.messages, s)] if job.n == 1 else llm.chat_batch([job.messages] * job.n, s)
            for i, text in enumerate(texts):
                job.piece(i, text)
        for i, row in enumerate(job.rows):
            tokens = completion_tokens(llm, job.messages, row.text)
            # The protocol returns text only, so "length" is inferred from the reply's size.
            job.finish(i, "length" if tokens >= s.max_new_tokens else "stop", tokens)


def completion_tokens(llm: LLM, messages: list[Message], text: str) -> int:
    """Tokens the reply added, measured with the model's own counting (prompt with vs without it)."""
    convo, prefill = split_prefill(messages)
    before = llm.count_tokens([*convo, {"role": "assistant", "content": prefill}])
    after = llm.count_tokens([*convo, {"role": "assistant", "content": prefill + text}])
    return max(0, after - before)


class GatedLLM:
    """The LLM protocol over an engine: every call runs on the model thread (for the agent's own calls)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.name = engine.llm.name
        self.context_window = engine.llm.context_window
        self.sampling = getattr(engine.llm, "sampling", None)

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        return self.engine.call(self.engine.llm.chat, messages, sampling, **overrides)

    def chat_batch(
        self, conversations: list[list[Message]], sampling: Sampling | None = None, **overrides: Any
    ) -> list[str]:
        return self.engine.call(self.engine.llm.chat_batch, conversations, sampling, **overrides)

    def stream(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> Any:
        yield self.chat(messages, sampling, **overrides)

    def count_tokens(self, messages: list[Message]) -> int:
        return self.engine.count_tokens(messages)
