"""A small OpenAI-compatible HTTP API over any rolecraft `LLM`: `/v1/models` and `/v1/chat/completions`.

Every model gets an `Engine` (one worker thread; concurrent requests are queued up to a bound and
batched where the backend can). Errors always come back as OpenAI error objects with a 4xx/5xx
status, never as a traceback. The character server (`characters.py`) serves base models with the
same `raw_chat` used here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import RolecraftError
from ..llm.base import LLM, Sampling
from .engine import Engine
from .protocol import (
    ApiError,
    ChatRequest,
    completion_head,
    context_exceeded,
    install_error_handlers,
    not_found,
    parse_chat_request,
    read_body,
)
from .responses import admit, client_gone, collect, completion_response, sse_body, stream_response

__all__ = ["ApiError", "Limits", "create_app", "install_error_handlers", "raw_chat", "running_server", "serve"]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the queue bound and batch size of each model's engine."""

    max_body_bytes: int = 1_000_000
    max_messages: int = 512
    max_tokens: int = 512  # larger requests are clamped to this (front ends often ask for thousands)
    max_pending: int = 32
    max_batch: int = 16
    batch_wait_s: float = 0.2

    def check(self, req: ChatRequest) -> None:
        if len(req.messages) > self.max_messages:
            raise ApiError(400, f"At most {self.max_messages} messages per request.", param="messages")

    def sampling(self, req: ChatRequest, base: Sampling) -> Sampling:
        s = req.sampling(base)
        return s.with_(max_new_tokens=min(s.max_new_tokens, self.max_tokens))

    def engine(self, llm: LLM) -> Engine:
        return Engine(llm, self.max_pending, self.max_batch, self.batch_wait_s)


def model_card(name: str, created: int, **extra: Any) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "rolecraft", **extra}


async def raw_chat(request: Request, req: ChatRequest, engine: Engine, limits: Limits) -> Response:
    """A chat completion straight from a model (no character, no memory)."""
    llm = engine.llm
    messages = req.chat_messages()
    s = limits.sampling(req, getattr(llm, "sampling", None) or Sampling())
    head = completion_head(req.model)
    ticket = admit(engine)
    try:
        needed = await run_in_threadpool(engine.count_tokens, messages) + s.max_new_tokens
        if needed > llm.context_window:
            raise context_exceeded(needed, llm.context_window)
    except BaseException:
        ticket.release()
        raise
    job = engine.submit(messages, s, req.n, req.stream, ticket)
    if req.stream:
        return await stream_response(sse_body(job, head, include_usage=req.wants_usage, cleanup=ticket.release))
    with ticket:
        rows = await collect(job, request)
    return client_gone() if rows is None else completion_response(job, rows, head)


def engines_for(llms: dict[str, LLM], limits: Limits) -> dict[str, Engine]:
    """One engine per model object, even when it is served under several names."""
    by_object: dict[int, Engine] = {}
    return {name: by_object.setdefault(id(llm), limits.engine(llm)) for name, llm in llms.items()}


@asynccontextmanager
async def closing_engines(app: FastAPI) -> Any:
    yield
    for engine in set(app.state.engines.values()):
        engine.close()


def create_app(llms: dict[str, LLM], limits: Limits | None = None) -> FastAPI:
    """An OpenAI-compatible app serving the given models under their dict keys."""
    if not llms:
        raise RolecraftError("The server needs at least one model to serve.")
    limits = limits or Limits()
    app = FastAPI(title="rolecraft", docs_url=None, redoc_url=None, openapi_url=None, lifespan=closing_engines)
    app.state.llms = llms
    app.state.engines = engines_for(llms, limits)
    created = int(time.time())
    install_error_handlers(app)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(n, created) for n in llms]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        if name not in llms:
            raise ApiError(404, f"The model {name!r} does not exist.", param="model", code="model_not_found")
        return model_card(name, created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = parse_chat_request(await read_body(request, limits.max_body_bytes))
        limits.check(req)
        if req.model not in llms:
            raise not_found(req.model, list(llms))
        return await raw_chat(request, req, app.state.engines[req.model], limits)

    return app


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
