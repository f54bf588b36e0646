"""rolecraft's OpenAI-compatible server and client, over real HTTP on loopback.

Most tests serve a tiny deterministic fake model; those marked `model` serve the embedded SmolLM2.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import rolecraft.llm.openai_compat as openai_compat
from rolecraft.errors import RolecraftError
from rolecraft.llm.base import LLM, BaseLLM, Message, Sampling, split_prefill
from rolecraft.llm.openai_compat import OpenAICompatLLM
from rolecraft.server import create_app, running_server

USER = [{"role": "user", "content": "hello there friend"}]


class EchoLLM(BaseLLM):
    """Replies `echo: <last user text>`, word by word; ignores stops like some real servers do.

    With `parrot=True` it also repeats a prefill before the reply, like servers that echo it.
    """

    def __init__(self, name: str = "echo", parrot: bool = False):
        super().__init__(Sampling(max_new_tokens=50))
        self.name, self.parrot = name, parrot
        self.seen: list[Sampling] = []

    def _reply(self, messages: list[Message], s: Sampling) -> list[str]:
        self.seen.append(s)
        convo, prefill = split_prefill(messages)
        words = ["echo:", *convo[-1]["content"].split()][: s.max_new_tokens]
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        return [prefill, *pieces] if self.parrot and prefill else pieces

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        return "".join(self._reply(messages, self._sampling(sampling, overrides)))

    def stream(
        self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any
    ) -> Iterator[str]:
        yield from self._reply(messages, self._sampling(sampling, overrides))

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"].split()) for m in messages)


@pytest.fixture(scope="module")
def echo() -> EchoLLM:
    return EchoLLM()


@pytest.fixture(scope="module")
def echo_url(echo: EchoLLM) -> Iterator[str]:
    with running_server(create_app({"echo": echo, "parrot": EchoLLM("parrot", parrot=True)})) as url:
        yield url


def post(url: str, body: Any, **kw: Any) -> httpx.Response:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = {"content-type": "application/json"}
    return httpx.post(f"{url}/chat/completions", content=data, headers=headers, timeout=30, **kw)


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# -- the server, with a fake model -------------------------------------------------------------------
def test_models_list(echo_url: str) -> None:
    body = httpx.get(f"{echo_url}/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["echo", "parrot"]
    assert all(m["object"] == "model" for m in body["data"])


def test_chat_completion_shape(echo_url: str) -> None:
    body = post(echo_url, {"model": "echo", "messages": USER}).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "echo"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "echo: hello there friend"}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_request_fields_reach_the_model(echo_url: str, echo: EchoLLM) -> None:
    body = {
        "model": "echo",
        "messages": USER,
        "temperature": 0.2,
        "top_p": 0.5,
        "max_completion_tokens": 7,
        "stop": "END",
        "seed": 5,
        "frequency_penalty": 0.3,  # unknown to rolecraft: ignored
        "stream_options": {"include_usage": True},
    }
    assert post(echo_url, body).status_code == 200
    s = echo.seen[-1]
    assert (s.temperature, s.top_p, s.max_new_tokens, s.stop, s.seed) == (0.2, 0.5, 7, ("END",), 5)


def test_max_tokens_gives_finish_reason_length(echo_url: str) -> None:
    body = post(echo_url, {"model": "echo", "messages": USER, "max_tokens": 2}).json()
    assert body["choices"][0]["message"]["content"] == "echo: hello"
    assert body["choices"][0]["finish_reason"] == "length"


def test_content_parts_are_joined(echo_url: str) -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    body = post(echo_url, {"model": "echo", "messages": [{"role": "user", "content": parts}]}).json()
    assert body["choices"][0]["message"]["content"] == "echo: one two"


def test_n_gives_several_choices(echo_url: str) -> None:
    body = post(echo_url, {"model": "echo", "messages": USER, "n": 2}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]


def test_stream_chunks(echo_url: str) -> None:
    with httpx.stream(
        "POST", f"{echo_url}/chat/completions", json={"model": "echo", "messages": USER, "stream": True}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content", "") for d in deltas) == "echo: hello there friend"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] == [None, "stop"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "messages": USER}, 404, "model"),
        ('{"model": "echo", "messages": [', 400, None),
        ("[1, 2]", 400, None),
        ({"model": "echo", "messages": []}, 400, "messages"),
        ({"model": "echo"}, 400, "messages"),
        ({"model": "echo", "messages": USER, "temperature": "hot"}, 400, "temperature"),
        ({"model": "echo", "messages": USER, "temperature": 9}, 400, "temperature"),
        ({"model": "echo", "messages": [{"role": "user", "content": 3}]}, 400, "messages.0.content"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": "echo", "messages": USER, "n": 0}, 400, "n"),
        ({"model": "echo", "messages": USER, "n": 2, "stream": True}, 400, "n"),
        ({"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, None),
    ],
)
def test_bad_requests_get_openai_errors(echo_url: str, body: Any, status: int, param: str | None) -> None:
    error = assert_error(post(echo_url, body), status, param)
    if status == 404:
        assert error["code"] == "model_not_found"


def test_unknown_route_gets_an_error_object(echo_url: str) -> None:
    assert_error(httpx.get(f"{echo_url}/nothing-here"), 404)


# -- the client, against the server ------------------------------------------------------------------
def test_client_chat_stream_and_batch(echo_url: str) -> None:
    llm = OpenAICompatLLM("echo", base_url=echo_url)
    assert llm.chat(USER) == "echo: hello there friend"
    pieces = list(llm.stream(USER))
    assert len(pieces) > 1 and "".join(pieces) == "echo: hello there friend"
    convos = [[{"role": "user", "content": f"number {i}"}] for i in range(6)]
    assert llm.chat_batch(convos) == [f"echo: number {i}" for i in range(6)]


def test_client_applies_stops_the_server_ignored(echo_url: str) -> None:
    llm = OpenAICompatLLM("echo", base_url=echo_url)
    assert llm.chat(USER, stop=[" there"]) == "echo: hello"
    assert "".join(llm.stream(USER, stop=["re fr"])) == "echo: hello the"


def test_client_drops_an_echoed_prefill(echo_url: str) -> None:
    convo = [*USER, {"role": "assistant", "content": 'Mira: "'}]
    for model in ("echo", "parrot"):
        llm = OpenAICompatLLM(model, base_url=echo_url)
        assert llm.chat(convo) == "echo: hello there friend"
        assert "".join(llm.stream(convo)) == "echo: hello there friend"


def test_client_names_a_missing_model(echo_url: str) -> None:
    with pytest.raises(RolecraftError, match="'gpt-nope' is not served at"):
        OpenAICompatLLM("gpt-nope", base_url=echo_url).chat(USER)


def test_client_reports_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAICompatLLM("m", base_url=url, max_tries=2, backoff=0)
    with pytest.raises(RolecraftError, match=f"Cannot reach the server at {url}"):
        llm.chat(USER)


def test_client_reports_a_rejected_key() -> None:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def deny() -> JSONResponse:
        error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
        return JSONResponse({"error": {**error, "param": None, "code": "invalid_api_key"}}, status_code=401)

    with running_server(app) as url:
        llm = OpenAICompatLLM("m", base_url=url, api_key="sk-wrong")
        with pytest.raises(RolecraftError, match=f"server at {url} rejected the API key.*Incorrect API key"):
            llm.chat(USER)


def fake_endpoint(replies: list[httpx.Response]) -> tuple[OpenAICompatLLM, list[httpx.Request]]:
    """A client whose HTTP transport plays back `replies` (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return replies[min(len(seen), len(replies)) - 1]

    llm = OpenAICompatLLM("m", base_url="http://fake/v1", backoff=7)
    llm.client = httpx.Client(transport=httpx.MockTransport(handle))
    return llm, seen


def test_client_retries_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(openai_compat, "sleep", waits.append)
    ok = {"choices": [{"message": {"role": "assistant", "content": "fine"}}]}
    busy = httpx.Response(429, headers={"retry-after": "2"}, json={"error": {"message": "slow down"}})
    llm, seen = fake_endpoint([busy, httpx.Response(503), httpx.Response(200, json=ok)])
    assert llm.chat(USER, stop=["x"], seed=3) == "fine"
    assert len(seen) == 3 and waits == [2.0, 14.0]  # Retry-After, then the backoff (7 * 2)
    sent = json.loads(seen[0].content)
    assert sent["stop"] == ["x"] and sent["seed"] == 3 and sent["messages"] == USER


def test_client_gives_up_after_four_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compat, "sleep", lambda _: None)
    llm, seen = fake_endpoint([httpx.Response(500, json={"error": {"message": "boom"}})])
    with pytest.raises(RolecraftError, match=r"kept failing \(500: boom\) after 4 tries"):
        llm.chat(USER)
    assert len(seen) == 4


def test_client_does_not_retry_a_bad_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_compat, "sleep", lambda _: None)
    llm, seen = fake_endpoint([httpx.Response(400, json={"error": {"message": "bad stop"}})])
    with pytest.raises(RolecraftError, match="refused the request"):
        llm.chat(USER)
    assert len(seen) == 1


def test_client_needs_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLECRAFT_OPENAI_MODEL", raising=False)
    with pytest.raises(RolecraftError, match="needs a model id"):
        OpenAICompatLLM(None)


def test_client_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROLECRAFT_OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://example.invalid/v1/")
    monkeypatch.setenv("ROLECRAFT_OPENAI_API_KEY", "sk-test")
    llm = OpenAICompatLLM("m")
    assert llm.base_url == "http://example.invalid/v1"
    assert llm.client.headers["authorization"] == "Bearer sk-test"


# -- the official openai client against the server ---------------------------------------------------
def test_official_openai_client(echo_url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=echo_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["echo", "parrot"]
    reply = client.chat.completions.create(model="echo", messages=USER, n=2, seed=1, stop=["zzz"])
    assert [c.message.content for c in reply.choices] == ["echo: hello there friend"] * 2
    stream = client.chat.completions.create(model="echo", messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "echo: hello there friend"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[])


# -- the real embedded model behind the server -------------------------------------------------------
@pytest.fixture(scope="module")
def smol_url(local_llm: LLM) -> Iterator[str]:
    with running_server(create_app({"smollm2": local_llm})) as url:
        yield url


MIRA = [
    {"role": "system", "content": "You are Mira, a cheerful baker in a small harbour town."},
    {"role": "user", "content": "Mira, what is your favourite thing to bake?"},
]


@pytest.mark.model
def test_served_model_matches_the_local_one(smol_url: str, local_llm: LLM) -> None:
    llm = OpenAICompatLLM("smollm2", base_url=smol_url, sampling=Sampling(temperature=0, max_new_tokens=24))
    reply = llm.chat(MIRA)
    assert reply.strip()
    assert reply == local_llm.chat(MIRA, temperature=0, max_new_tokens=24)
    assert "".join(llm.stream(MIRA)) == reply


@pytest.mark.model
def test_served_model_batch_and_stop(smol_url: str) -> None:
    llm = OpenAICompatLLM("smollm2", base_url=smol_url, sampling=Sampling(temperature=0, max_new_tokens=16))
    convos = [MIRA, USER, [{"role": "user", "content": "Name a colour."}]]
    replies = llm.chat_batch(convos)
    assert len(replies) == 3 and all(r.strip() for r in replies)
    assert replies[0] == llm.chat(MIRA)  # order kept
    speech = llm.chat([*MIRA, {"role": "assistant", "content": 'Mira: "'}], stop=['"'])
    assert '"' not in speech and not speech.startswith("Mira:")
