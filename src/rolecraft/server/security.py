"""API keys: when any are configured, every route except the web page's files needs one.

Checked in a plain ASGI middleware (before routing, so an unknown URL leaks nothing either), with a
constant-time comparison against every key.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

PUBLIC_PATHS = ("/", "/index.html", "/favicon.ico")
PUBLIC_PREFIX = "/static/"


def is_public(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX))


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    found = dict(headers)
    auth = found.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    return found.get(b"x-api-key", b"").strip()


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: tuple[str, ...]):
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or is_public(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        given = presented_key(scope["headers"])
        # every key is compared (no early exit), each in constant time
        if given and any([hmac.compare_digest(given, key) for key in self.keys]):
            await self.app(scope, receive, send)
            return
        message = "Incorrect API key provided." if given else "Missing API key: send `Authorization: Bearer <key>`."
        await _send_error(send, 401, message, "invalid_api_key")


async def _send_error(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
