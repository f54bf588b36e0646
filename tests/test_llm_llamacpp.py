"""The llama.cpp backend, and the client against llama-cpp-python's own OpenAI server.

Skipped unless llama-cpp-python is installed (`make llamacpp`).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip("llama_cpp")

from rolecraft.llm.base import LLM, Sampling  # noqa: E402
from rolecraft.llm.llamacpp import LlamaCppLLM  # noqa: E402
from rolecraft.llm.local import embedded_gguf  # noqa: E402
from rolecraft.llm.openai_compat import OpenAICompatLLM  # noqa: E402

pytestmark = pytest.mark.model

MIRA = [
    {"role": "system", "content": "You are Mira, a cheerful baker in a small harbour town."},
    {"role": "user", "content": "Mira, what is your favourite thing to bake?"},
]
PREFILL = [*MIRA, {"role": "assistant", "content": 'Mira: "'}]


@pytest.fixture(scope="module")
def llama() -> LlamaCppLLM:
    return LlamaCppLLM(n_ctx=1024, sampling=Sampling(temperature=0, max_new_tokens=32))


def test_chat_and_protocol(llama: LlamaCppLLM) -> None:
    assert isinstance(llama, LLM)
    reply = llama.chat(MIRA)
    assert reply.strip() and reply == llama.chat(MIRA)
    assert llama.count_tokens(MIRA) > 10


def test_seed_repeats_a_sampled_reply(llama: LlamaCppLLM) -> None:
    first = llama.chat(MIRA, temperature=1.0, seed=99)
    assert first == llama.chat(MIRA, temperature=1.0, seed=99)


def test_stream_joins_to_the_chat_reply(llama: LlamaCppLLM) -> None:
    pieces = list(llama.stream(MIRA))
    assert len(pieces) > 1 and "".join(pieces) == llama.chat(MIRA)


def test_prefill_continues_and_stops_at_the_quote(llama: LlamaCppLLM) -> None:
    assert llama.render(PREFILL).endswith('<|im_start|>assistant\nMira: "')
    speech = llama.chat(PREFILL, stop=['"'])
    assert '"' not in speech and not speech.startswith("Mira:")
    assert "".join(llama.stream(PREFILL, stop=['"'])) == speech


def test_batch(llama: LlamaCppLLM) -> None:
    assert len(llama.chat_batch([MIRA, PREFILL], max_new_tokens=8)) == 2


# -- llama-cpp-python's OpenAI-compatible server, driven by our client ------------------------------
@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    needed = ("sse_starlette", "starlette_context", "pydantic_settings", "fastapi", "uvicorn")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama_cpp.server needs {', '.join(missing)} (pip install 'llama-cpp-python[server]')")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf())]
    cmd += ["--model_alias", "smollm2", "--n_ctx", "1024", "--host", "127.0.0.1", "--port", str(port)]
    # Its log goes to a file: it is chatty enough to fill a pipe and stall.
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_client_against_llama_cpp_server(llama_server: str) -> None:
    client = OpenAICompatLLM(
        "smollm2", base_url=llama_server, sampling=Sampling(temperature=0, max_new_tokens=24)
    )
    # Not compared with in-process output: the server applies its own defaults (repeat_penalty 1.1)
    # and reuses its prompt cache, both of which shift greedy text.
    reply = client.chat(MIRA)
    assert reply.strip()
    assert "".join(client.stream(MIRA)).strip()
    first_word = client.chat(MIRA, stop=[" "])
    assert first_word and " " not in first_word
    assert len(client.chat_batch([MIRA, MIRA, MIRA], max_new_tokens=8)) == 3
    # llama.cpp's server closes the assistant turn instead of continuing it (the documented
    # caveat), so only the client-side guarantees can be checked here: text, cut at the quote.
    speech = client.chat(PREFILL, stop=['"'])
    assert isinstance(speech, str) and '"' not in speech
