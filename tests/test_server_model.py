"""The character server on the embedded model, through the official `openai` client on loopback.

These check generation for real: the role-play agent (retrieval, prompt, memory) on SmolLM2,
streaming, n=2, stop strings, batching of concurrent requests, and a session across a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from rolecraft.examples import load_example
from rolecraft.llm.base import LLM
from rolecraft.server import running_server
from rolecraft.server.characters import ServerConfig, create_character_app
from rolecraft.server.openai_api import Limits
from rolecraft.workspace import Workspace

pytestmark = pytest.mark.model
CONFIG = ServerConfig(limits=Limits(batch_wait_s=1.0))


def app_for(llm: LLM, root: Path) -> Any:
    return create_character_app(llm, root / "sessions.sqlite3", Workspace(root / "workspace"), CONFIG)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-server")


@pytest.fixture(scope="module")
def served(local_llm: LLM, root: Path) -> Iterator[tuple[openai.OpenAI, Any]]:
    app = app_for(local_llm, root)
    with running_server(app) as url:
        yield openai.OpenAI(base_url=url, api_key="undefined", max_retries=0, timeout=120), app


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_models_list_has_the_characters_and_the_base_model(served: tuple[openai.OpenAI, Any]) -> None:
    client, _ = served
    ids = [m.id for m in client.models.list()]
    assert "mira" in ids and "lin-xiao" in ids and ids[-1] == "smollm2"


def test_a_completion_in_character(served: tuple[openai.OpenAI, Any]) -> None:
    client, _ = served
    reply = client.chat.completions.create(
        model="mira", messages=ask("What is the name of your cat?"), max_tokens=24, temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.content.strip() and choice.finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 24 and reply.usage.prompt_tokens > 50
    statements = reply.model_extra["rolecraft"]["statements"]
    mira = load_example("mira").statement_texts
    assert len(statements) == 5 and set(statements) <= set(mira)
    assert any("Barnacle" in s for s in statements)  # retrieval found the statement about the cat


def test_a_streamed_completion(served: tuple[openai.OpenAI, Any]) -> None:
    client, _ = served
    chunks = list(client.chat.completions.create(
        model="mira", messages=ask("Describe your lighthouse."), max_tokens=20, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces).strip()
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].model_extra["rolecraft"]["reply"]
    assert chunks[-1].usage.completion_tokens <= 20


def test_n_two_choices(served: tuple[openai.OpenAI, Any]) -> None:
    client, _ = served
    reply = client.chat.completions.create(
        model="mira", messages=ask("Tell me about your brother."), max_tokens=16, temperature=1.0, seed=3, n=2
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.content.strip() for c in reply.choices)


def test_a_stop_string_cuts_the_reply(served: tuple[openai.OpenAI, Any]) -> None:
    client, _ = served

    def greedy(**extra: Any) -> str:
        return client.chat.completions.create(
            model="mira", messages=ask("What do you do every evening?"), max_tokens=24, temperature=0, **extra
        ).choices[0].message.content

    full = greedy()
    words = [w for w in full.split() if len(w) >= 3]
    assert len(words) >= 3, full
    stop = words[len(words) // 2]
    cut = greedy(stop=[stop, "zz1", "zz2", "zz3", "zz4"])  # more than four stops
    assert stop not in cut and full.startswith(cut) and len(cut) < len(full)


def test_concurrent_requests_share_a_batch(served: tuple[openai.OpenAI, Any]) -> None:
    client, app = served
    engine = app.state.server.engine
    batches, rows = engine.batches, engine.batched_rows
    replies: list[str] = []

    def one(question: str) -> None:
        r = client.chat.completions.create(model="mira", messages=ask(question), max_tokens=12, temperature=0)
        replies.append(r.choices[0].message.content)

    threads = [threading.Thread(target=one, args=(q,)) for q in ("Hello!", "Do you swim?", "Who is Tom?")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 3 and all(r.strip() for r in replies)
    assert engine.batched_rows - rows == 3 and engine.batches - batches < 3


def test_a_session_spans_a_restart(local_llm: LLM, root: Path) -> None:
    def turn(url: str, text: str, session: str) -> Any:
        client = openai.OpenAI(base_url=url, api_key="undefined", max_retries=0, timeout=120)
        return client.chat.completions.create(
            model="mira", messages=ask(text), max_tokens=16, temperature=0, extra_body={"session_id": session}
        )

    with running_server(app_for(local_llm, root)) as url:
        first = turn(url, "My name is Tom and I sail a red boat.", "restart")
    with running_server(app_for(local_llm, root)) as url:  # a new server on the same session file
        second = turn(url, "What colour is my boat?", "restart")
        fresh = turn(url, "What colour is my boat?", "a-new-session")
        stored = httpx.get(f"{url}/sessions/restart").json()
    assert second.model_extra["rolecraft"]["turn"] == 1
    assert [t["user"] for t in stored["turns"]] == ["My name is Tom and I sail a red boat.", "What colour is my boat?"]
    assert stored["turns"][0]["reply"] == first.choices[0].message.content
    # the earlier turn is in the prompt: the same question costs more prompt tokens than in a fresh session
    assert second.usage.prompt_tokens > fresh.usage.prompt_tokens + 10


def test_one_batch_keeps_each_rows_limit_and_stops(local_llm: LLM) -> None:
    """Rows of one generate() call: their own max tokens, their own stop strings, near-zero temperature."""
    import asyncio

    from rolecraft.llm.base import Sampling
    from rolecraft.server.engine import Engine

    engine = Engine(local_llm, batch_wait_s=2.0)
    prompt = ask("Tell me a long story about the sea.")

    async def run() -> list[Any]:
        tickets = [engine.admit() for _ in range(3)]  # all three count as preparing: one batch
        samplings = [
            Sampling(temperature=0, max_new_tokens=4),
            Sampling(temperature=0, max_new_tokens=16),
            Sampling(temperature=1e-9, max_new_tokens=16, stop=(" ",)),  # greedy, not infinities
        ]
        jobs = [engine.submit(prompt, s, ticket=t) for s, t in zip(samplings, tickets, strict=True)]
        rows = [(await job.wait())[0] for job in jobs]
        for t in tickets:
            t.release()
        return rows

    try:
        short, long, stopped = asyncio.run(run())
    finally:
        engine.close()
    assert engine.batches == 1 and engine.batched_rows == 3
    assert short.finish_reason == "length" and short.completion_tokens == 4
    assert long.text.startswith(short.text) and long.completion_tokens > 4
    assert stopped.finish_reason == "stop" and " " not in stopped.text and long.text.startswith(stopped.text)
