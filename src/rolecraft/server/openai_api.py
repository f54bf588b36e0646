"""A small OpenAI-compatible HTTP API over any rolecraft `LLM`: `/v1/models` and `/v1/chat/completions`.

Generation is blocking, so it runs in worker threads; one lock per model makes requests to the same
model take turns (a model object holds one set of weights and caches, and is not thread-safe).
Errors always come back as OpenAI error objects with a 4xx/5xx status, never as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RolecraftError
from ..llm.base import LLM, Message, Sampling, split_prefill

log = logging.getLogger(__name__)


# -- request shape ---------------------------------------------------------------------------------
class _Strict(BaseModel):
    # strict: "0.5" is not a number and 1 is not a string; extra="ignore": unknown fields are fine.
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Strict):
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def to_message(self, index: int) -> Message:
        role = "system" if self.role == "developer" else self.role
        if self.content is None or isinstance(self.content, str):
            return {"role": role, "content": self.content or ""}
        if any(p.type != "text" or p.text is None for p in self.content):
            raise ApiError(400, "Only text content parts are supported.", param=f"messages.{index}.content")
        return {"role": role, "content": "\n".join(p.text or "" for p in self.content)}


class ChatRequest(_Strict):
    model: str
    messages: list[ChatMessage]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stream: bool = False

    def sampling(self, base: Sampling) -> Sampling:
        return base.with_(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_completion_tokens or self.max_tokens,
            stop=self.stop,
            seed=self.seed,
        )


# -- errors ----------------------------------------------------------------------------------------
class ApiError(Exception):
    """An error to send as `{"error": {...}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure (ours, the router's, an unexpected bug) an OpenAI-style error object."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RolecraftError)
    async def _rolecraft(_: Request, exc: RolecraftError) -> JSONResponse:
        return ApiError(400, str(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"Unknown URL: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return ApiError(exc.status_code, message).response()

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return ApiError(500, f"Internal server error ({type(exc).__name__}).", type="server_error").response()


_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple[int | str, ...]) -> str | None:
    """The request field a validation error is about, e.g. `messages.0.content`.

    Pydantic adds the union branch it tried (`str`, `list[ContentPart]`) to the location; that is
    noise for an API user.
    """
    names = [str(p) for p in loc if not (isinstance(p, str) and (p in _BRANCHES or "[" in p))]
    return ".".join(names) or None


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate a request body, turning every problem into a 400 that names the offending field."""
    try:
        req = ChatRequest.model_validate_json(raw or b"")
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
        if err["type"] == "model_type":
            raise ApiError(400, "The request body must be a JSON object.") from None
        param = _param(err["loc"])
        raise ApiError(400, f"Invalid request: {param}: {err['msg']}.", param=param) from None
    if not req.messages:
        raise ApiError(400, "`messages` must contain at least one message.", param="messages")
    if req.stream and req.n > 1:
        raise ApiError(400, "Streaming supports only n=1.", param="n")
    return req


# -- responses -------------------------------------------------------------------------------------
def _completion_tokens(llm: LLM, messages: list[Message], text: str) -> int:
    """Tokens the reply added, measured with the model's own counting (prompt with vs without it)."""
    convo, prefill = split_prefill(messages)
    before = llm.count_tokens([*convo, {"role": "assistant", "content": prefill}])
    after = llm.count_tokens([*convo, {"role": "assistant", "content": prefill + text}])
    return max(0, after - before)


def _finish_reason(tokens: int, s: Sampling) -> str:
    # The protocol returns text only, so "length" is inferred from the reply's size.
    return "length" if tokens >= s.max_new_tokens else "stop"


def _sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _pieces_in_thread(
    llm: LLM, lock: threading.Lock, messages: list[Message], s: Sampling
) -> AsyncIterator[str]:
    """Run `llm.stream` in a worker thread, handing pieces to the event loop as they come.

    If the client goes away, the worker notices on its next piece and closes the stream, which stops
    generation and frees the model's lock.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (server shutting down)
            cancel.set()

    def produce() -> None:
        try:
            with lock:
                pieces = llm.stream(messages, s)
                try:
                    for piece in pieces:
                        if cancel.is_set():
                            break
                        put("piece", piece)
                finally:
                    close = getattr(pieces, "close", None)
                    if close:
                        close()
        except Exception as exc:
            put("error", exc)
        finally:
            put("end", None)

    threading.Thread(target=produce, name="rolecraft-stream", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        cancel.set()


def create_app(llms: dict[str, LLM]) -> FastAPI:
    """An OpenAI-compatible app serving the given models under their dict keys."""
    if not llms:
        raise RolecraftError("The server needs at least one model to serve.")
    app = FastAPI(title="rolecraft", docs_url=None, redoc_url=None)
    app.state.llms = llms
    # One lock per model object, even when it is served under several names.
    by_object: dict[int, threading.Lock] = {}
    app.state.locks = {name: by_object.setdefault(id(llm), threading.Lock()) for name, llm in llms.items()}
    created = int(time.time())
    install_error_handlers(app)

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": created, "owned_by": "rolecraft"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(n) for n in llms]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        if name not in llms:
            raise ApiError(404, f"The model {name!r} does not exist.", param="model", code="model_not_found")
        return model_card(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = parse_chat_request(await request.body())
        if req.model not in llms:
            raise ApiError(
                404,
                f"The model {req.model!r} does not exist; served: {', '.join(llms)}.",
                param="model",
                code="model_not_found",
            )
        llm, lock = llms[req.model], app.state.locks[req.model]
        messages = [m.to_message(i) for i, m in enumerate(req.messages)]
        s = req.sampling(getattr(llm, "sampling", None) or Sampling())
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        if req.stream:
            return StreamingResponse(
                _stream_body(llm, lock, messages, s, head), media_type="text/event-stream"
            )

        def generate() -> dict[str, Any]:
            with lock:
                texts = [llm.chat(messages, s)] if req.n == 1 else llm.chat_batch([messages] * req.n, s)
                prompt_tokens = llm.count_tokens(messages)
                used = [_completion_tokens(llm, messages, t) for t in texts]
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "logprobs": None,
                    "finish_reason": _finish_reason(u, s),
                }
                for i, (t, u) in enumerate(zip(texts, used, strict=True))
            ]
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": sum(used),
                "total_tokens": prompt_tokens + sum(used),
            }
            return {**head, "object": "chat.completion", "choices": choices, "usage": usage}

        return await run_in_threadpool(generate)

    return app


async def _stream_body(
    llm: LLM, lock: threading.Lock, messages: list[Message], s: Sampling, head: dict[str, Any]
) -> AsyncIterator[bytes]:
    """SSE `chat.completion.chunk`s: the role, the content deltas, the finish reason, `[DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    text = ""
    try:
        async for piece in _pieces_in_thread(llm, lock, messages, s):
            text += piece
            yield chunk({"content": piece})
    except Exception as exc:  # headers are sent already: report in-band, as OpenAI does
        if not isinstance(exc, RolecraftError):
            log.exception("unexpected error while streaming")
        kind = "invalid_request_error" if isinstance(exc, RolecraftError) else "server_error"
        yield _sse(ApiError(500, str(exc) or type(exc).__name__, kind).body())
        return

    def count() -> int:
        with lock:  # tokenizers are not safe to share with a generation running in another thread
            return _completion_tokens(llm, messages, text)

    tokens = await run_in_threadpool(count)
    yield chunk({}, _finish_reason(tokens, s))
    yield b"data: [DONE]\n\n"


# -- running it ------------------------------------------------------------------------------------
def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `app` in the foreground until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level="info")


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", startup_timeout: float = 30) -> Iterator[str]:
    """Serve `app` from a background thread on a free port; yields its base URL (ending in /v1)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))  # bound before the server starts, so no other process can take the port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="rolecraft-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RolecraftError(f"The server on {host}:{port} did not start.")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
