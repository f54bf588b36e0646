"""The transformers backend on the real embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import pytest

from rolecraft.llm.base import LLM, Sampling, cut_at_stop

pytestmark = pytest.mark.model

# Explicit settings: the shared fixture keeps the model's defaults (up to 200 new tokens).
GREEDY = Sampling(temperature=0.0, max_new_tokens=32)

HELLO = [{"role": "user", "content": "Say hello to a new neighbour in one sentence."}]
MIRA = [
    {"role": "system", "content": "You are Mira, a cheerful baker in a small harbour town."},
    {"role": "user", "content": "Mira, what is your favourite thing to bake?"},
]


def test_follows_the_protocol(local_llm: LLM) -> None:
    assert isinstance(local_llm, LLM)
    assert local_llm.context_window >= 2048
    assert local_llm.count_tokens(HELLO) > 5


def test_reply_is_text(local_llm: LLM) -> None:
    reply = local_llm.chat(HELLO, GREEDY)
    assert isinstance(reply, str) and reply.strip()


def test_greedy_is_deterministic(local_llm: LLM) -> None:
    assert local_llm.chat(HELLO, GREEDY) == local_llm.chat(HELLO, GREEDY)


def test_seed_repeats_a_sampled_reply(local_llm: LLM) -> None:
    first = local_llm.chat(HELLO, GREEDY, temperature=1.0, seed=1234)
    assert first == local_llm.chat(HELLO, GREEDY, temperature=1.0, seed=1234)


def test_batch_returns_one_reply_per_conversation(local_llm: LLM) -> None:
    convos = [HELLO, MIRA, [{"role": "user", "content": "Name a colour."}]]
    replies = local_llm.chat_batch(convos, GREEDY, max_new_tokens=12)
    assert len(replies) == 3
    assert all(isinstance(r, str) and r.strip() for r in replies)


def test_stream_joins_to_the_chat_reply(local_llm: LLM) -> None:
    pieces = list(local_llm.stream(MIRA, GREEDY))
    assert len(pieces) > 1
    assert "".join(pieces) == local_llm.chat(MIRA, GREEDY)


def test_stop_string_cuts_the_reply(local_llm: LLM) -> None:
    full = local_llm.chat(MIRA, GREEDY)
    words = full.split()
    assert len(words) > 3, full
    stop = " " + words[2]  # a stop that surely occurs, after a couple of words
    expected = cut_at_stop(full, [stop])[0]
    assert local_llm.chat(MIRA, GREEDY, stop=[stop]) == expected
    assert "".join(local_llm.stream(MIRA, GREEDY, stop=[stop])) == expected


def test_prefill_continues_quoted_speech(local_llm: LLM) -> None:
    convo = [*MIRA, {"role": "assistant", "content": 'Mira: "'}]
    speech = local_llm.chat(convo, GREEDY, stop=['"'])
    assert '"' not in speech
    assert not speech.startswith("Mira:")  # continued, not restarted
    assert "".join(local_llm.stream(convo, GREEDY, stop=['"'])) == speech
