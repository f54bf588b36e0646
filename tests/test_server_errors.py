"""Malformed requests: each gets a 4xx OpenAI error object (never a traceback or a 500), and the
server keeps serving after every one of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_support import FakeScorer, ScriptedLLM, scripted_app

from rolecraft.server import running_server
from rolecraft.server.characters import ServerConfig
from rolecraft.server.openai_api import Limits

ADA = "ada-vell"
USER = [{"role": "user", "content": "hello"}]
LIMITS = Limits(max_body_bytes=200_000, max_messages=50)


def ok(**fields: Any) -> dict[str, Any]:
    return {"model": ADA, "messages": USER, **fields}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("errors")
    app = scripted_app(root, ScriptedLLM(), ServerConfig(limits=LIMITS), scorer=FakeScorer())
    with running_server(app) as base:
        yield base


# (what, method, path, body (dict: JSON; str/bytes: raw), headers, expected status)
CASES: list[tuple[str, str, str, Any, dict[str, str], int]] = [
    ("broken JSON", "POST", "/chat/completions", '{"model": "ada-vell", "messages": [', {}, 400),
    ("JSON array body", "POST", "/chat/completions", "[1, 2, 3]", {}, 400),
    ("JSON string body", "POST", "/chat/completions", '"hello"', {}, 400),
    ("empty body", "POST", "/chat/completions", b"", {}, 400),
    ("invalid UTF-8", "POST", "/chat/completions", b'{"model": "ada-vell", "messages": [{"role": "user", '
     b'"content": "\xff\xfe\xfd"}]}', {}, 400),
    ("NaN temperature", "POST", "/chat/completions", '{"model": "ada-vell", "messages": [{"role": "user", '
     '"content": "hi"}], "temperature": NaN}', {}, 400),
    ("deeply nested JSON", "POST", "/chat/completions", '{"model": ' + "[" * 5000 + "]" * 5000 + "}", {}, 400),
    ("missing model", "POST", "/chat/completions", {"messages": USER}, {}, 400),
    ("model is a number", "POST", "/chat/completions", ok(model=7), {}, 400),
    ("unknown character", "POST", "/chat/completions", ok(model="nobody"), {}, 404),
    ("path-like model id", "POST", "/chat/completions", ok(model="../../etc/passwd"), {}, 404),
    ("absolute path model id", "POST", "/chat/completions", ok(model="/etc/passwd"), {}, 404),
    ("traversal inside an id", "POST", "/chat/completions", ok(model="mira/../ada-vell"), {}, 404),
    ("model id with a NUL", "POST", "/chat/completions", ok(model="mira\u0000"), {}, 404),
    ("missing messages", "POST", "/chat/completions", {"model": ADA}, {}, 400),
    ("empty messages", "POST", "/chat/completions", ok(messages=[]), {}, 400),
    ("messages is a string", "POST", "/chat/completions", ok(messages="hello"), {}, 400),
    ("message without a role", "POST", "/chat/completions", ok(messages=[{"content": "hi"}]), {}, 400),
    ("unknown role", "POST", "/chat/completions", ok(messages=[{"role": "wizard", "content": "hi"}]), {}, 400),
    ("content is a number", "POST", "/chat/completions", ok(messages=[{"role": "user", "content": 3}]), {}, 400),
    ("image content part", "POST", "/chat/completions",
     ok(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), {}, 400),
    ("only system messages", "POST", "/chat/completions",
     ok(messages=[{"role": "system", "content": "be nice"}]), {}, 400),
    ("ends with the assistant", "POST", "/chat/completions",
     ok(messages=[*USER, {"role": "assistant", "content": "hi"}]), {}, 400),
    ("blank user message", "POST", "/chat/completions", ok(messages=[{"role": "user", "content": "  \n "}]), {}, 400),
    ("negative max_tokens", "POST", "/chat/completions", ok(max_tokens=-5), {}, 400),
    ("zero max_completion_tokens", "POST", "/chat/completions", ok(max_completion_tokens=0), {}, 400),
    ("max_tokens as text", "POST", "/chat/completions", ok(max_tokens="100"), {}, 400),
    ("max_tokens as a float", "POST", "/chat/completions", ok(max_tokens=10.5), {}, 400),
    ("temperature as text", "POST", "/chat/completions", ok(temperature="hot"), {}, 400),
    ("temperature too high", "POST", "/chat/completions", ok(temperature=5), {}, 400),
    ("top_p of zero", "POST", "/chat/completions", ok(top_p=0), {}, 400),
    ("n of zero", "POST", "/chat/completions", ok(n=0), {}, 400),
    ("n far too large", "POST", "/chat/completions", ok(n=10**30), {}, 400),
    ("streamed n=2", "POST", "/chat/completions", ok(n=2, stream=True), {}, 400),
    ("stop is a number", "POST", "/chat/completions", ok(stop=5), {}, 400),
    ("stop list with a number", "POST", "/chat/completions", ok(stop=["a", 1]), {}, 400),
    ("seed as text", "POST", "/chat/completions", ok(seed="42"), {}, 400),
    ("seed beyond 64 bits", "POST", "/chat/completions", ok(seed=2**70), {}, 400),
    ("message longer than the context", "POST", "/chat/completions",
     ok(messages=[{"role": "user", "content": "word " * 3000}]), {}, 400),
    ("raw model prompt longer than the context", "POST", "/chat/completions",
     ok(model="scripted", messages=[{"role": "user", "content": "word " * 3000}]), {}, 400),
    ("stream as text", "POST", "/chat/completions", ok(stream="yes"), {}, 400),
    ("stream_options wrong type", "POST", "/chat/completions", ok(stream_options="usage"), {}, 400),
    ("huge body", "POST", "/chat/completions", ok(messages=[{"role": "user", "content": "x" * 300_000}]), {}, 413),
    ("too many messages", "POST", "/chat/completions", ok(messages=USER * 51), {}, 400),
    ("path-like session id", "POST", "/chat/completions", ok(session_id="../../x"), {}, 400),
    ("empty session id", "POST", "/chat/completions", ok(session_id=""), {}, 400),
    ("session id as a number", "POST", "/chat/completions", ok(session_id=12), {}, 400),
    ("header and body sessions differ", "POST", "/chat/completions", ok(session_id="a"), {"X-Session-Id": "b"}, 400),
    ("bad session id header", "POST", "/chat/completions", ok(), {"X-Session-Id": "no spaces allowed"}, 400),
    ("GET on a POST route", "GET", "/chat/completions", None, {}, 405),
    ("unknown route", "GET", "/engines", None, {}, 404),
    ("unknown model card", "GET", "/models/../../etc/passwd", None, {}, 404),
    ("faithfulness without fields", "POST", "/faithfulness", {}, {}, 400),
    ("faithfulness for nobody", "POST", "/faithfulness", {"model": "nobody", "query": "q", "reply": "r"}, {}, 404),
    ("faithfulness reply as a list", "POST", "/faithfulness", {"model": ADA, "query": "q", "reply": ["r"]}, {}, 400),
    ("faithfulness negative turn", "POST", "/faithfulness", {"session_id": "s", "turn": -1}, {}, 400),
    ("faithfulness turn that is not there", "POST", "/faithfulness", {"session_id": "s", "turn": 3}, {}, 404),
    ("faithfulness broken JSON", "POST", "/faithfulness", "{", {}, 400),
    ("session that does not exist", "GET", "/sessions/nope", None, {}, 404),
    ("invalid session id in the URL", "GET", "/sessions/%20bad%20", None, {}, 400),
    ("delete a session that does not exist", "DELETE", "/sessions/nope", None, {}, 404),
    ("session list limit as text", "GET", "/sessions?limit=lots", None, {}, 400),
]


@pytest.mark.parametrize(("what", "method", "path", "body", "headers", "status"), CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_an_openai_error(
    url: str, what: str, method: str, path: str, body: Any, headers: dict[str, str], status: int
) -> None:
    content = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    r = httpx.request(
        method, f"{url}{path}", content=content, headers={"Content-Type": "application/json", **headers}, timeout=30
    )
    assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"] and "File \"" not in error["message"]
    # the server is still there and still answers properly
    assert httpx.post(f"{url}/chat/completions", json=ok(max_tokens=3), timeout=30).status_code == 200


def test_there_are_at_least_thirty_kinds(url: str) -> None:
    assert len(CASES) >= 30


def test_a_body_without_content_length_is_capped_too(url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "ada-vell", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}]}'

    r = httpx.post(f"{url}/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
