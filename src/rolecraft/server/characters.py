"""The character server: OpenAI-compatible chat with rolecraft characters, sessions, faithfulness, a web page.

Model ids are character ids (workspace slugs, then bundled examples) plus the base model's name. A
chat with a character runs the role-play agent (statement retrieval, prompt style, memory), so a
client that sends only its new message still gets an in-character reply.

Where the conversation's history comes from:
- with a session id (header `X-Session-Id` or body field `session_id`), the server keeps turns and
  summary in SQLite and uses only the client's last user message; a session's first request may
  carry earlier messages, which seed it. The turn is committed before the reply is acknowledged
  (the JSON body, or the stream's finish chunk), so every acknowledged turn survives a crash;
- without one, the agent's memory is rebuilt from the messages the client sent (see `history.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..agent import AgentConfig
from ..character import Character
from ..llm.base import LLM, Message, Sampling
from ..retrieval import Retriever
from ..workspace import Workspace
from .catalog import Catalog
from .engine import GatedLLM, RowResult
from .faithfulness import Faithfulness, FaithfulnessRequest
from .history import Conversation, conversation
from .openai_api import Limits, model_card, raw_chat
from .protocol import (
    ApiError,
    ChatRequest,
    completion_head,
    context_exceeded,
    install_error_handlers,
    not_found,
    parse_body,
    parse_chat_request,
    read_body,
)
from .responses import admit, client_gone, collect, completion_response, sse_body, stream_response
from .roleplay import LeadCleaner, ServedAgent, SharedRetriever, agent_config, client_stops
from .security import ApiKeyMiddleware
from .sessions import SessionStore, valid_session_id

STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class ServerConfig:
    limits: Limits = field(default_factory=Limits)
    api_keys: tuple[str, ...] = ()
    agent: AgentConfig = field(default_factory=AgentConfig)
    examples: bool = True  # also offer the bundled example characters the workspace does not shadow


class CharacterChatRequest(ChatRequest):
    session_id: str | None = None


class KeyedLocks:
    """One asyncio lock per session id: a session's requests take turns (created and dropped on demand)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, key: str) -> Callable[[], None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        await lock.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            lock.release()
            lock_now, users_now = self._locks[key]
            if users_now <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock_now, users_now - 1)

        return release


def _session_id(req: CharacterChatRequest, request: Request) -> str | None:
    header = request.headers.get("x-session-id")
    if req.session_id is not None and header is not None and req.session_id != header:
        raise ApiError(400, "The X-Session-Id header and the session_id field differ.", param="session_id")
    sid = req.session_id if req.session_id is not None else header
    if sid is not None and not valid_session_id(sid):
        raise ApiError(
            400, "A session id is 1-128 letters, digits, '_', '-', '.' or ':', starting with a letter or digit.",
            param="session_id",
        )  # fmt: skip
    return sid


@dataclass
class PreparedTurn:
    """A turn whose prompt is ready; `finalize` remembers the reply (and stores it, with a session)."""

    server: CharacterServer
    agent: ServedAgent
    model: str
    session_id: str | None
    message: str
    messages: list[Message]
    statements: list[str]
    summarized: bool
    sampling: Sampling
    replies: list[str] = field(default_factory=list)

    async def finalize(self, rows: list[RowResult]) -> dict[str, Any]:
        """Runs before the reply is acknowledged: the turn is on disk before the client hears of it."""
        self.replies = [self.agent.clean(r.text) for r in rows]
        self.agent.commit(self.message, self.replies[0], self.statements, self.messages, self.summarized)
        turn = len(self.agent.memory.log) - 1
        if self.session_id:
            store = self.server.store
            turn = await run_in_threadpool(store.save, self.session_id, self.model, self.agent.memory)
        info = {"session_id": self.session_id, "turn": turn, "reply": self.replies[0], "statements": self.statements}
        return {"rolecraft": {**info, "summarized": self.summarized}}


class CharacterServer:
    """What the routes share: the model's engine, the characters, the sessions, the scorer."""

    def __init__(
        self, llm: LLM, store: SessionStore, catalog: Catalog, config: ServerConfig,
        faithfulness: Faithfulness, retriever: Retriever,
    ):  # fmt: skip
        self.llm, self.store, self.catalog, self.config = llm, store, catalog, config
        self.limits = config.limits
        self.engine = self.limits.engine(llm)
        self.gated = GatedLLM(self.engine)
        self.faithfulness, self.retriever = faithfulness, retriever
        self.locks = KeyedLocks()

    def base_models(self) -> list[str]:
        return [] if self.llm.name in self.catalog.ids() else [self.llm.name]

    def character(self, model: str) -> Character:
        found = self.catalog.get(model) if model in self.catalog.ids() else None
        if found is None:
            raise not_found(model, self.catalog.ids() + self.base_models())
        return found

    # -- chat ---------------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        req = parse_chat_request(await read_body(request, self.limits.max_body_bytes), CharacterChatRequest)
        self.limits.check(req)
        if req.model in self.base_models():
            return await raw_chat(request, req, self.engine, self.limits)
        character = self.character(req.model)
        session_id = _session_id(req, request)
        conv = conversation(req.chat_messages())
        ticket = admit(self.engine)
        unlock = await self.locks.acquire(session_id) if session_id else None

        def release() -> None:
            if unlock:
                unlock()
            ticket.release()

        try:
            turn = await self._prepare(req, character, session_id, conv)
            if await request.is_disconnected():  # it left while its prompt was prepared: spare the model
                release()
                return client_gone()
            job = self.engine.submit(turn.messages, turn.sampling, req.n, req.stream, ticket)
        except BaseException:
            release()
            raise
        head = completion_head(req.model)
        headers = {"X-Session-Id": session_id} if session_id else {}
        if req.stream:
            body = sse_body(
                job, head, include_usage=req.wants_usage, text_filter=LeadCleaner(character.name),
                finalize=turn.finalize, cleanup=release,
            )  # fmt: skip
            return await stream_response(body, headers)
        try:
            rows = await collect(job, request)
            if rows is None:
                return client_gone()
            extra = await turn.finalize(rows)
        finally:
            release()
        response = completion_response(job, rows, head, texts=turn.replies, **extra)
        response.headers.update(headers)
        return response

    async def _prepare(
        self, req: CharacterChatRequest, character: Character, session_id: str | None, conv: Conversation
    ) -> PreparedTurn:
        """Memory (stored or rebuilt), statements, the prompt, and sampling; refuses what cannot fit."""
        stored = await run_in_threadpool(self.store.load, session_id) if session_id else None
        if stored and stored.character != req.model:
            raise ApiError(
                409, f"Session {session_id!r} belongs to the character {stored.character!r}.",
                param="session_id", code="session_character_mismatch",
            )  # fmt: skip
        config = agent_config(self.config.agent, req, self.limits.max_tokens)
        window = self.llm.context_window
        alone = await run_in_threadpool(self.engine.count_tokens, [{"role": "user", "content": conv.message}])
        if alone + config.max_new_tokens > window:  # refused before any summarising is spent on it
            raise context_exceeded(alone + config.max_new_tokens, window)
        agent = ServedAgent(character, self.gated, config, self.retriever)
        agent.memory = stored.memory if stored else conv.memory(character.name)
        msgs, statements, summarized, sampling = await run_in_threadpool(
            agent.prepare_request, conv.message, client_stops(req)
        )
        needed = await run_in_threadpool(self.engine.count_tokens, msgs) + sampling.max_new_tokens
        if needed > window:
            raise context_exceeded(needed, window)
        return PreparedTurn(self, agent, req.model, session_id, conv.message, msgs, statements, summarized, sampling)

    # -- faithfulness ---------------------------------------------------------------------------
    async def score(self, request: Request) -> dict[str, Any]:
        req = parse_body(await read_body(request, self.limits.max_body_bytes), FaithfulnessRequest)
        stored_turn = None
        if req.session_id is not None or req.turn is not None:
            if req.session_id is None or req.turn is None or not valid_session_id(req.session_id):
                raise ApiError(400, "Give both a valid `session_id` and a `turn` index.", param="session_id")
            found = await run_in_threadpool(self.store.turn, req.session_id, req.turn)
            if found is None:
                raise ApiError(404, f"Session {req.session_id!r} has no turn {req.turn}.", code="turn_not_found")
            model, query, reply = found
            stored_turn = (req.session_id, req.turn)
        elif req.model is None or req.query is None or req.reply is None:
            raise ApiError(400, "Give `model` (a character id), `query` and `reply`.", param="model")
        else:
            model, query, reply = req.model, req.query, req.reply
        character = self.character(model)
        statements = character.statement_texts if req.statements is None else req.statements
        self.faithfulness.admit()
        try:
            report = await run_in_threadpool(self.faithfulness.report, statements, query, reply, character.name)
        finally:
            self.faithfulness.done()
        report = {**report, "model": model, "character": character.name}
        if stored_turn and req.statements is None:
            await run_in_threadpool(self.store.set_faithfulness, *stored_turn, report)
        return report

    # -- catalogue ------------------------------------------------------------------------------
    def character_card(self, character_id: str, created: int) -> dict[str, Any]:
        c = self.character(character_id)
        info = {"kind": "character", "name": c.name, "greeting": c.greeting, "statements": len(c.statements)}
        return model_card(character_id, created, rolecraft=info)

    def base_card(self, name: str, created: int) -> dict[str, Any]:
        return model_card(name, created, rolecraft={"kind": "model"})


def create_character_app(
    llm: LLM,
    db: str | Path,
    workspace: Workspace | None = None,
    config: ServerConfig | None = None,
    scorer: Callable[[], Any] | None = None,
    retriever: Retriever | None = None,
) -> FastAPI:
    """The character server over one loaded model; sessions in the SQLite file `db`.

    `scorer` builds the APC scorer on first use (default: the shipped discriminators); `retriever`
    defaults to one shared embedding retriever, also loaded on first use.
    """
    config = config or ServerConfig()
    store = SessionStore(db)
    catalog = Catalog(workspace or Workspace(), config.examples)
    faith = Faithfulness(scorer, config.limits.max_pending)
    server = CharacterServer(llm, store, catalog, config, faith, SharedRetriever(retriever))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        server.engine.close()
        store.close()

    app = FastAPI(title="rolecraft", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server
    install_error_handlers(app)
    app.add_middleware(ApiKeyMiddleware, keys=config.api_keys)
    created = int(time.time())

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        cards = [server.character_card(i, created) for i in catalog.ids()]
        return {"object": "list", "data": cards + [server.base_card(n, created) for n in server.base_models()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        if name in server.base_models():
            return server.base_card(name, created)
        return server.character_card(name, created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await server.chat(request)

    @app.post("/v1/faithfulness")
    async def faithfulness(request: Request) -> dict[str, Any]:
        return await server.score(request)

    @app.get("/v1/sessions")
    async def list_sessions(character: str | None = None, limit: int = 200) -> dict[str, Any]:
        rows = await run_in_threadpool(store.list, character, max(1, min(limit, 1000)))
        return {"object": "list", "data": rows}

    def checked(session_id: str) -> str:
        if not valid_session_id(session_id):
            raise ApiError(400, "Not a valid session id.", param="session_id")
        return session_id

    @app.get("/v1/sessions/{session_id}")
    async def read_session(session_id: str) -> dict[str, Any]:
        found = await run_in_threadpool(store.get, checked(session_id))
        if found is None:
            raise ApiError(404, f"There is no session {session_id!r}.", param="session_id", code="session_not_found")
        return found

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(session_id: str) -> dict[str, Any]:
        sid = checked(session_id)
        release = await server.locks.acquire(sid)  # not while one of its turns is being written
        try:
            deleted = await run_in_threadpool(store.delete, sid)
        finally:
            release()
        if not deleted:
            raise ApiError(404, f"There is no session {session_id!r}.", param="session_id", code="session_not_found")
        return {"id": sid, "object": "session.deleted", "deleted": True}

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

