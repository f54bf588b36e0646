"""OpenAI-compatible backend: any server speaking `/v1/chat/completions` (OpenAI, vLLM, Ollama,
llama.cpp's server, rolecraft's own server), over plain httpx.

Prefill caveat: a trailing assistant message is sent as the last message, and servers that support
continuation (rolecraft's server, Ollama, llama.cpp's server) continue it. Servers that ignore it
start a fresh reply instead; if that reply (or an echoing server's) begins with the prefill text,
the echo is dropped, otherwise the reply is returned as it came.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from time import sleep
from typing import Any

import httpx

from ..errors import RolecraftError
from .base import BaseLLM, Message, Sampling, StopStream, cut_at_stop, split_prefill

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
_MAX_SERVER_STOPS = 4  # OpenAI rejects more; the rest are applied here


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (a number or an HTTP date), if it said."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _server_message(response: httpx.Response) -> str:
    """The error text inside an OpenAI-style error body, or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(error or body)[:300]


def _strip_echo(text: str, prefill: str) -> str:
    return text[len(prefill) :] if prefill and text.startswith(prefill) else text


class OpenAICompatLLM(BaseLLM):
    """A model behind an OpenAI-compatible HTTP endpoint."""

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        sampling: Sampling | None = None,
        timeout: float = 120,
        concurrency: int = 4,
        max_tries: int = 4,
        backoff: float = 0.5,
        context_window: int = 4096,
    ):
        super().__init__(sampling)
        model = model or _env("ROLECRAFT_OPENAI_MODEL")
        if not model:
            raise RolecraftError("The openai backend needs a model id (--model or ROLECRAFT_OPENAI_MODEL).")
        self.name = model
        self.context_window = context_window
        self.base_url = (
            base_url or _env("ROLECRAFT_OPENAI_BASE_URL", "OPENAI_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        key = api_key or _env("ROLECRAFT_OPENAI_API_KEY", "OPENAI_API_KEY")
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.max_tries = max(1, max_tries)
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # One pooled client; httpx clients are safe to share between the batch threads.
        self.client = httpx.Client(
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=self.concurrency + 2),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenAICompatLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------
    def _payload(self, messages: list[Message], s: Sampling, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_new_tokens,
            "stream": stream,
        }
        if s.stop:
            body["stop"] = list(s.stop[:_MAX_SERVER_STOPS])
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    def _fail(self, response: httpx.Response, tries: int) -> RolecraftError:
        """A readable error for a response that will not get better by retrying."""
        url, code, msg = self.base_url, response.status_code, _server_message(response)
        if code in (401, 403):
            return RolecraftError(
                f"The server at {url} rejected the API key ({code}: {msg}); "
                "set ROLECRAFT_OPENAI_API_KEY or OPENAI_API_KEY."
            )
        if code == 404 and "model" in msg.lower():
            return RolecraftError(f"Model {self.name!r} is not served at {url} (404: {msg}).")
        if code == 404:
            return RolecraftError(f"No chat endpoint at {url}/chat/completions (404); is base_url right?")
        if code in _RETRY_STATUS:
            return RolecraftError(f"The server at {url} kept failing ({code}: {msg}) after {tries} tries.")
        return RolecraftError(f"The server at {url} refused the request ({code}: {msg}).")

    @contextmanager
    def _post(self, body: dict[str, Any]) -> Iterator[httpx.Response]:
        """POST with retries on 429/5xx and connection errors; yields an open, successful response."""
        url = f"{self.base_url}/chat/completions"
        for attempt in range(1, self.max_tries + 1):
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                response = self.client.send(self.client.build_request("POST", url, json=body), stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if attempt == self.max_tries:
                    raise RolecraftError(
                        f"Cannot reach the server at {self.base_url} ({exc}); is it running?"
                    ) from None
            except httpx.TimeoutException:
                raise RolecraftError(
                    f"The server at {self.base_url} did not answer within {self.timeout:g}s."
                ) from None
            else:
                if response.status_code < 400:
                    break
                response.read()
                response.close()
                if response.status_code not in _RETRY_STATUS or attempt == self.max_tries:
                    raise self._fail(response, attempt)
                wait = min(_retry_after(response) or wait, 60.0)
            sleep(wait)
        try:
            yield response
        except httpx.HTTPError as exc:
            raise RolecraftError(f"The connection to {self.base_url} broke mid-reply ({exc}).") from None
        finally:
            response.close()

    # -- generation ----------------------------------------------------------------------------
    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        s = self._sampling(sampling, overrides)
        prefill = split_prefill(messages)[1]
        with self._post(self._payload(messages, s, stream=False)) as response:
            response.read()
            try:
                content = response.json()["choices"][0]["message"].get("content") or ""
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise RolecraftError(
                    f"The server at {self.base_url} sent a reply that is not a chat completion."
                ) from None
        return cut_at_stop(_strip_echo(content, prefill), s.stop)[0]

    def chat_batch(
        self, conversations: list[list[Message]], sampling: Sampling | None = None, **overrides: Any
    ) -> list[str]:
        if len(conversations) <= 1:
            return [self.chat(c, sampling, **overrides) for c in conversations]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self.chat(c, sampling, **overrides), conversations))

    def stream(
        self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any
    ) -> Iterator[str]:
        s = self._sampling(sampling, overrides)
        prefill = split_prefill(messages)[1]
        stops = StopStream(s.stop)
        head: str | None = ""  # text held until it is clear whether the server echoed the prefill
        with self._post(self._payload(messages, s, stream=True)) as response:
            for piece in self._sse_pieces(response):
                if prefill and head is not None:
                    head += piece
                    if prefill.startswith(head) and len(head) < len(prefill):
                        continue
                    piece, head = _strip_echo(head, prefill), None
                out = stops.feed(piece)
                if out:
                    yield out
                if stops.done:
                    return
        tail = stops.feed(head or "") + stops.flush()
        if tail:
            yield tail

    def _sse_pieces(self, response: httpx.Response) -> Iterator[str]:
        """Content deltas from a server-sent-events body, until `data: [DONE]`."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments, `event:` lines
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise RolecraftError(f"The server at {self.base_url} sent a malformed event.") from None
            if isinstance(chunk, dict) and chunk.get("error"):
                err = chunk["error"]
                msg = err.get("message", err) if isinstance(err, dict) else err
                raise RolecraftError(f"The server at {self.base_url} failed while streaming: {msg}")
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text
