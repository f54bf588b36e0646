"""The OpenAI wire format that both apps speak: request models, error objects, response and SSE shapes."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RolecraftError
from ..llm.base import Message, Sampling

log = logging.getLogger(__name__)


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
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure (ours, the router's, an unexpected bug) an OpenAI-style error object."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RolecraftError)
    async def _rolecraft(_: Request, exc: RolecraftError) -> JSONResponse:
        return ApiError(400, str(exc)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        param = _param(tuple(err["loc"])[1:])  # drop "query"/"path"/"body"
        return ApiError(400, f"Invalid request: {param}: {err['msg']}.", param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"Unknown URL: {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return ApiError(exc.status_code, message).response()

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving a request")
        return ApiError(500, f"Internal server error ({type(exc).__name__}).", type="server_error").response()


def not_found(model: str, served: list[str]) -> ApiError:
    listed = ", ".join(served[:20]) + (", ..." if len(served) > 20 else "")
    return ApiError(
        404, f"The model {model[:100]!r} does not exist; served: {listed}.", param="model", code="model_not_found"
    )


# -- request shape ---------------------------------------------------------------------------------
class Strict(BaseModel):
    # strict: "0.5" is not a number and 1 is not a string; extra="ignore": unknown fields are fine.
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(Strict):
    type: str
    text: str | None = None


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None  # front ends label speakers with it; accepted, not needed

    def to_message(self, index: int) -> Message:
        role = "system" if self.role == "developer" else self.role
        if self.content is None or isinstance(self.content, str):
            return {"role": role, "content": self.content or ""}
        if any(p.type != "text" or p.text is None for p in self.content):
            raise ApiError(400, "Only text content parts are supported.", param=f"messages.{index}.content")
        return {"role": role, "content": "\n".join(p.text or "" for p in self.content)}


class StreamOptions(Strict):
    include_usage: bool = False


class ChatRequest(Strict):
    model: str
    messages: list[ChatMessage]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)  # what torch's generator accepts
    repetition_penalty: float | None = Field(None, gt=0, le=2)  # an extension vLLM and llama.cpp also accept
    stream: bool = False
    stream_options: StreamOptions | None = None

    def sampling(self, base: Sampling) -> Sampling:
        return base.with_(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_completion_tokens or self.max_tokens,
            stop=self.stop,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty,
        )

    @property
    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def chat_messages(self) -> list[Message]:
        return [m.to_message(i) for i, m in enumerate(self.messages)]


_BRANCHES = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple[int | str, ...]) -> str | None:
    """The request field a validation error is about, e.g. `messages.0.content`.

    Pydantic adds the union branch it tried (`str`, `list[ContentPart]`) to the location; that is
    noise for an API user.
    """
    names = [str(p) for p in loc if not (isinstance(p, str) and (p in _BRANCHES or "[" in p))]
    return ".".join(names) or None


M = TypeVar("M", bound=BaseModel)


def parse_body(raw: bytes, model: type[M]) -> M:
    """Validate a JSON body against `model`, turning every problem into a 400 naming the field."""
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ApiError(400, "The request body is not valid JSON (UTF-8).", code="invalid_json") from None
        if err["type"] == "model_type":
            raise ApiError(400, "The request body must be a JSON object.") from None
        param = _param(err["loc"])
        raise ApiError(400, f"Invalid request: {param}: {err['msg']}.", param=param) from None


R = TypeVar("R", bound=ChatRequest)


def parse_chat_request(raw: bytes, model: type[R] = ChatRequest) -> R:  # type: ignore[assignment]
    req = parse_body(raw, model)
    if not req.messages:
        raise ApiError(400, "`messages` must contain at least one message.", param="messages")
    if req.stream and req.n > 1:
        raise ApiError(400, "Streaming supports only n=1.", param="n")
    return req


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without reading all of it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    return bytes(body)


# -- responses -------------------------------------------------------------------------------------
def context_exceeded(tokens: int, window: int) -> ApiError:
    return ApiError(
        400, f"The prompt and reply need {tokens} tokens; the model's context holds {window}.",
        param="messages", code="context_length_exceeded",
    )  # fmt: skip


def completion_head(model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(head: dict[str, Any], texts: list[str], finishes: list[str], used: dict[str, int]) -> dict[str, Any]:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None, "finish_reason": f}
        for i, (t, f) in enumerate(zip(texts, finishes, strict=True))
    ]
    return {**head, "object": "chat.completion", "choices": choices, "usage": used}


def sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def chunk(head: dict[str, Any], delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return sse({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})


def usage_chunk(head: dict[str, Any], used: dict[str, int]) -> bytes:
    return sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": used})


def stream_error(exc: BaseException) -> bytes:
    """An error after the headers went out is reported in-band, as OpenAI does."""
    if isinstance(exc, ApiError):
        return sse(exc.body())
    if not isinstance(exc, RolecraftError):
        log.error("unexpected error while streaming", exc_info=exc)
    kind = "invalid_request_error" if isinstance(exc, RolecraftError) else "server_error"
    return sse(ApiError(500, str(exc) or type(exc).__name__, kind).body())
