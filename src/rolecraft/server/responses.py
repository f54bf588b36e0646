"""From an engine job to an HTTP response: a JSON completion, or SSE chunks; the client leaving cancels it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .engine import Busy, Engine, Job, RowResult, Ticket
from .protocol import DONE, ApiError, chunk, completion, stream_error, usage, usage_chunk

Finalize = Callable[[list[RowResult]], Awaitable[dict[str, Any]]]


class TextFilter(Protocol):
    def feed(self, piece: str) -> str: ...

    def flush(self) -> str: ...


def admit(engine: Engine) -> Ticket:
    try:
        return engine.admit()
    except Busy as busy:
        raise ApiError(
            429,
            f"The server is busy ({engine.max_pending} requests in progress); retry in {busy.retry_after}s.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(busy.retry_after)},
        ) from None


async def collect(job: Job, request: Request) -> list[RowResult] | None:
    """Wait for the job; None (and the job cancelled) if the client goes away first."""
    waiting = asyncio.ensure_future(job.wait())
    try:
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.25)
            if done:
                return waiting.result()
            if await request.is_disconnected():
                job.cancel()
                return None
    finally:
        if not waiting.done():
            waiting.cancel()


def client_gone() -> Response:
    return Response(status_code=499)  # nobody reads it; nginx's code for "client closed request"


def completion_response(
    job: Job, rows: list[RowResult], head: dict[str, Any], texts: list[str] | None = None, **extra: Any
) -> JSONResponse:
    used = usage(job.prompt_tokens, sum(r.completion_tokens for r in rows))
    body = completion(head, texts or [r.text for r in rows], [r.finish_reason or "stop" for r in rows], used)
    return JSONResponse({**body, **extra})


async def sse_body(
    job: Job,
    head: dict[str, Any],
    *,
    include_usage: bool = False,
    text_filter: TextFilter | None = None,
    finalize: Finalize | None = None,
    cleanup: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """`chat.completion.chunk`s: the role, content deltas, the finish reason, optional usage, `[DONE]`.

    `finalize` runs after generation and before the finish chunk (e.g. to store the turn), so a client
    that saw the finish reason knows the turn is on disk; what it returns is added to that chunk.
    """
    try:
        yield chunk(head, {"role": "assistant", "content": ""})
        try:
            async for _, piece in job.pieces():
                text = text_filter.feed(piece) if text_filter else piece
                if text:
                    yield chunk(head, {"content": text})
            if text_filter and (tail := text_filter.flush()):
                yield chunk(head, {"content": tail})
            extra = await finalize(job.rows) if finalize else {}
        except Exception as exc:  # headers are out already: report in-band
            yield stream_error(exc)
            return
        row = job.rows[0]
        yield chunk(head, {}, row.finish_reason or "stop", **extra)
        if include_usage:
            yield usage_chunk(head, usage(job.prompt_tokens, row.completion_tokens))
        yield DONE
    finally:
        job.cancel()  # a no-op when finished; stops generation when the client left mid-stream
        if cleanup:
            cleanup()


async def stream_response(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> StreamingResponse:
    """Start `body` before answering, so its `finally` (which releases the request's slot) runs
    even when the client leaves before the response is sent."""
    first = await anext(body)

    async def chained() -> AsyncIterator[bytes]:
        yield first
        async for part in body:
            yield part

    return StreamingResponse(chained(), media_type="text/event-stream", headers=headers)
