"""The character server over real HTTP on loopback, driven mostly with the official `openai` client.

A scripted model stands in for generation: these tests check control flow (the agent's prompt,
sessions, restarts, keys, the queue bound, cancellation). Generation itself is checked with the
embedded model in test_server_model.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_server_support import FACTS, FakeScorer, ScriptedLLM, scripted_app

from rolecraft.agent import SUMMARY_LABEL, AgentConfig
from rolecraft.errors import RolecraftError
from rolecraft.server import running_server
from rolecraft.server.characters import ServerConfig
from rolecraft.server.openai_api import Limits

ADA = "ada-vell"


def client(url: str, key: str = "undefined") -> openai.OpenAI:
    # "undefined" is what SillyTavern sends when no key is set; a server without keys accepts anything.
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ScriptedLLM, Any]]:
    llm = ScriptedLLM()
    app = scripted_app(tmp_path, llm, scorer=FakeScorer())
    with running_server(app) as url:
        yield url, llm, app


# -- the API ---------------------------------------------------------------------------------------
def test_models_lists_characters_then_the_base_model(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, _, _ = served
    models = list(client(url).models.list())
    ids = [m.id for m in models]
    assert ids[0] == ADA and {"mira", "lin-xiao"} <= set(ids) and ids[-1] == "scripted"
    ada = models[0].model_extra["rolecraft"]
    assert ada["kind"] == "character" and ada["name"] == "Ada Vell" and ada["statements"] == len(FACTS)
    assert client(url).models.retrieve("mira").id == "mira"


def test_a_new_message_alone_gets_the_agents_prompt(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, llm, _ = served
    reply = client(url).chat.completions.create(model=ADA, messages=user("Where were you born?"))
    assert reply.object == "chat.completion" and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content.startswith("Reply 1: I heard Where were you born?")
    system = llm.prompts[-1][0]
    assert system["role"] == "system" and "You are Ada Vell" in system["content"]
    assert all(f in system["content"] for f in FACTS[:5])  # top-k statements from the retriever
    extra = reply.model_extra["rolecraft"]
    assert extra["statements"] == FACTS[:5] and extra["session_id"] is None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_chunks_finish_and_usage(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, _, _ = served
    body = {"model": ADA, "messages": user("Hello"), "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["rolecraft"]["turn"] == 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"])
    assert text.strip() == finish["rolecraft"]["reply"]
    stream = client(url).chat.completions.create(model=ADA, messages=user("Hi there"), stream=True)
    assert "I heard Hi there" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_sampling_fields_n_and_many_stops_reach_the_model(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, llm, _ = served
    stops = ["END", "zz1", "zz2", "zz3", "zz4", "zz5"]  # more than OpenAI's 4
    reply = client(url).chat.completions.create(
        model=ADA, messages=user("Report"), n=2, temperature=0.4, top_p=0.8, max_tokens=30, seed=9, stop=stops,
        extra_body={"top_k": 40, "repetition_penalty": 1.1},  # unknown fields are ignored
    )  # fmt: skip
    assert len(reply.choices) == 2 and [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.content.endswith("I heard Report") for c in reply.choices)  # cut at "END"
    s = llm.samplings[-1]
    assert (s.temperature, s.top_p, s.max_new_tokens, s.seed) == (0.4, 0.8, 30, 9)
    assert set(stops) <= set(s.stop) and "User:" in s.stop  # the agent's own stops stay
    huge = client(url).chat.completions.create(model=ADA, messages=user("x"), max_completion_tokens=10**6)
    assert huge.choices[0].message.content and llm.samplings[-1].max_new_tokens == Limits().max_tokens


def test_front_end_history_is_rebuilt_into_the_agents_memory(served: tuple[str, ScriptedLLM, Any]) -> None:
    """What SillyTavern sends: several system messages anywhere, names, runs of one role, content parts."""
    url, llm, _ = served
    messages = [
        {"role": "system", "content": "[Start a new chat]"},
        {"role": "system", "content": "Ada is a pirate."},  # the client's persona text: the server's wins
        {"role": "assistant", "content": "Welcome aboard, traveller.", "name": "Ada Vell"},
        {"role": "user", "content": "Who are you?", "name": "Tom"},
        {"role": "assistant", "content": "The captain."},
        {"role": "system", "content": "[Stay in character]"},
        {"role": "assistant", "content": "Of the Kestrel."},
        {"role": "user", "content": [{"type": "text", "text": "Nice ship."}]},
        {"role": "user", "content": "Is Bolt aboard?", "name": "Tom"},
        {"role": "system", "content": "[Write the next reply]"},
    ]
    response = httpx.post(
        f"{url}/chat/completions", json={"model": ADA, "messages": messages, "top_k": 5, "min_p": 0.1},
        headers={"Authorization": "Bearer undefined"}, timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    prompt = llm.prompts[-1]
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert "pirate" not in prompt[0]["content"] and "Welcome aboard, traveller." in prompt[0]["content"]
    assert prompt[1:] == [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "The captain.\nOf the Kestrel."},
        {"role": "user", "content": "Nice ship.\nIs Bolt aboard?"},
    ]


# -- sessions --------------------------------------------------------------------------------------
def test_session_spans_a_server_restart(tmp_path: Path) -> None:
    llm = ScriptedLLM()
    with running_server(scripted_app(tmp_path, llm)) as url:
        c = client(url)
        trip = {"session_id": "trip"}
        first = c.chat.completions.create(model=ADA, messages=user("My name is Tom."), extra_body=trip)
        second = c.chat.completions.create(
            model=ADA, messages=user("I like ferrets."), extra_headers={"X-Session-Id": "trip"}
        )
    answers = [first.choices[0].message.content, second.choices[0].message.content]
    with running_server(scripted_app(tmp_path, llm)) as url:  # a new app and engine on the same file
        third = client(url).chat.completions.create(
            model=ADA, messages=user("What is my name?"), extra_body={"session_id": "trip"}
        )
        stored = httpx.get(f"{url}/sessions/trip").json()
    assert third.model_extra["rolecraft"]["turn"] == 2
    assert llm.prompts[-1][1:] == [
        {"role": "user", "content": "My name is Tom."},
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": "I like ferrets."},
        {"role": "assistant", "content": answers[1]},
        {"role": "user", "content": "What is my name?"},
    ]
    assert [t["user"] for t in stored["turns"]] == ["My name is Tom.", "I like ferrets.", "What is my name?"]
    assert stored["turns"][0]["statements"] == FACTS[:5]


def test_summary_survives_a_restart(tmp_path: Path) -> None:
    config = ServerConfig(agent=AgentConfig(context_budget=150, keep_recent=1))
    llm = ScriptedLLM()
    with running_server(scripted_app(tmp_path, llm, config)) as url:
        for i in range(4):
            text = f"Message number {i} about the long voyage north"
            client(url).chat.completions.create(model=ADA, messages=user(text), extra_body={"session_id": "s"})
        before = httpx.get(f"{url}/sessions/s").json()
    assert before["summary"].startswith("SUMMARY") and before["recent_from"] > 0
    with running_server(scripted_app(tmp_path, llm, config)) as url:
        client(url).chat.completions.create(model=ADA, messages=user("And now?"), extra_body={"session_id": "s"})
        after = httpx.get(f"{url}/sessions/s").json()
    assert f"{SUMMARY_LABEL}: SUMMARY" in llm.prompts[-1][0]["content"]
    assert len(after["turns"]) == 5 and after["summaries"] >= before["summaries"]


def test_a_new_session_is_seeded_from_the_clients_messages(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, llm, _ = served
    messages = [
        {"role": "assistant", "content": "Welcome aboard."},
        {"role": "user", "content": "Hello."},
        {"role": "assistant", "content": "Hello yourself."},
        {"role": "user", "content": "Where to?"},
    ]
    client(url).chat.completions.create(model=ADA, messages=messages, extra_body={"session_id": "seeded"})
    # once the session exists, only the client's last user message(s) count: the server has the rest
    history = [{"role": "user", "content": "ignored"}, {"role": "assistant", "content": "also ignored"}]
    messages = [*history, *user("Go on.")]
    client(url).chat.completions.create(model=ADA, messages=messages, extra_body={"session_id": "seeded"})
    stored = httpx.get(f"{url}/sessions/seeded").json()
    assert [t["user"] for t in stored["turns"]] == ["Hello.", "Where to?", "Go on."]
    assert "Welcome aboard." in stored["summary"]
    assert llm.prompts[-1][-1] == {"role": "user", "content": "Go on."}


def test_sessions_list_read_delete(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, _, _ = served
    c = client(url)
    for sid, model in (("a1", ADA), ("a2", ADA), ("m1", "mira")):
        c.chat.completions.create(model=model, messages=user(f"hello from {sid}"), extra_body={"session_id": sid})
    listed = httpx.get(f"{url}/sessions", params={"character": ADA}).json()["data"]
    assert [s["id"] for s in listed] == ["a2", "a1"]  # most recent first
    assert listed[0]["turns"] == 1 and listed[0]["title"] == "hello from a2"
    assert len(httpx.get(f"{url}/sessions").json()["data"]) == 3
    assert httpx.delete(f"{url}/sessions/a1").json() == {"id": "a1", "object": "session.deleted", "deleted": True}
    assert httpx.get(f"{url}/sessions/a1").status_code == 404
    assert httpx.delete(f"{url}/sessions/a1").status_code == 404
    mismatch = httpx.post(
        f"{url}/chat/completions", json={"model": ADA, "messages": user("hi"), "session_id": "m1"}, timeout=30
    )
    assert mismatch.status_code == 409 and mismatch.json()["error"]["code"] == "session_character_mismatch"


# -- faithfulness ----------------------------------------------------------------------------------
def test_faithfulness_for_a_reply_and_for_a_stored_turn(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, _, _ = served
    report = httpx.post(
        f"{url}/faithfulness",
        json={"model": ADA, "query": "Do you have a ferret?", "reply": "Yes, my ferret Bolt."},
        timeout=30,
    ).json()
    assert report["object"] == "faithfulness" and report["character"] == "Ada Vell"
    assert report["statements"] == len(FACTS) and report["active"] == 1 and report["entailed"] == 1
    assert report["total"] == pytest.approx(sum(r["contribution"] for r in report["rows"]))
    client(url).chat.completions.create(model=ADA, messages=user("Tell me of Orrin"), extra_body={"session_id": "f"})
    scored = httpx.post(f"{url}/faithfulness", json={"session_id": "f", "turn": 0}, timeout=30).json()
    assert scored["query"] == "Tell me of Orrin"
    assert httpx.get(f"{url}/sessions/f").json()["turns"][0]["faithfulness"]["total"] == scored["total"]


def test_a_missing_scorer_is_a_503(tmp_path: Path) -> None:
    def broken() -> Any:
        raise RolecraftError("The shipped nli discriminator is missing")

    app = scripted_app(tmp_path, ScriptedLLM())
    app.state.server.faithfulness._factory = broken
    with running_server(app) as url:
        r = httpx.post(f"{url}/faithfulness", json={"model": ADA, "query": "q", "reply": "r"}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "scorer_unavailable"


# -- security and load -----------------------------------------------------------------------------
def test_api_keys_guard_everything_but_the_page(tmp_path: Path) -> None:
    app = scripted_app(tmp_path, ScriptedLLM(), ServerConfig(api_keys=("sk-one", "sk-two")))
    with running_server(app) as url:
        root = url.removesuffix("/v1")
        for path in ("/models", "/sessions", "/nothing-here"):
            r = httpx.get(f"{url}{path}")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer undefined"}).status_code == 401
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer sk-two"}).status_code == 200
        assert httpx.get(f"{url}/models", headers={"X-Api-Key": "sk-one"}).status_code == 200
        assert httpx.get(f"{root}/").status_code == 200 and httpx.get(f"{root}/static/app.js").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            client(url, "sk-nope").models.list()
        assert client(url, "sk-one").chat.completions.create(model=ADA, messages=user("hi")).choices


def stream_in_thread(url: str, body: dict[str, Any], out: list[Any]) -> threading.Thread:
    def run() -> None:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as r:
            out.append(r.status_code)
            out.append("".join(r.iter_text()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    llm = ScriptedLLM(delay=0.15)
    app = scripted_app(tmp_path, llm, ServerConfig(limits=Limits(max_pending=2)))
    with running_server(app) as url:
        outs: list[list[Any]] = [[], []]
        body = {"model": ADA, "messages": user("slow one"), "stream": True}
        threads = [stream_in_thread(url, body, out) for out in outs]
        deadline = time.monotonic() + 10
        while app.state.server.engine.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = httpx.post(f"{url}/chat/completions", json={"model": ADA, "messages": user("one more")}, timeout=30)
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["code"] == "rate_limit_exceeded"
        for t in threads:
            t.join()
        assert [o[0] for o in outs] == [200, 200] and all("[DONE]" in o[1] for o in outs)
        assert client(url).chat.completions.create(model=ADA, messages=user("now")).choices  # served again


def test_a_client_that_leaves_cancels_its_generation(tmp_path: Path) -> None:
    llm = ScriptedLLM(delay=0.2)
    app = scripted_app(tmp_path, llm)
    with running_server(app) as url:
        body = {"model": ADA, "messages": user("a long story please"), "stream": True, "session_id": "gone"}
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break  # leave after the first words
        deadline = time.monotonic() + 10
        while (llm.cancelled == 0 or app.state.server.engine.active) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert llm.cancelled == 1 and llm.finished == 0
        assert app.state.server.engine.active == 0
        assert httpx.get(f"{url}/sessions/gone").status_code == 404  # nothing acknowledged, nothing stored


def test_the_page_is_served_with_a_strict_policy(served: tuple[str, ScriptedLLM, Any]) -> None:
    url, _, _ = served
    page = httpx.get(url.removesuffix("/v1") + "/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_a_queued_request_whose_client_left_never_reaches_the_model(tmp_path: Path) -> None:
    llm = ScriptedLLM(delay=0.1)
    app = scripted_app(tmp_path, llm)
    with running_server(app) as url:
        out: list[Any] = []
        first = stream_in_thread(url, {"model": ADA, "messages": user("first in line"), "stream": True}, out)
        deadline = time.monotonic() + 10
        while not llm.prompts and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up while its request waits for the model
            httpx.post(f"{url}/chat/completions", json={"model": ADA, "messages": user("impatient")}, timeout=0.5)
        first.join()
        deadline = time.monotonic() + 10
        while app.state.server.engine.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out[0] == 200 and app.state.server.engine.active == 0
        assert not any("impatient" in p[-1]["content"] for p in llm.prompts)
