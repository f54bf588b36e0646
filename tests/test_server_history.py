"""From what a front end sends to the agent's memory; the streamed-reply cleaner; session locks."""

from __future__ import annotations

import asyncio

import pytest

from rolecraft.agent import RolePlayAgent
from rolecraft.character import Character
from rolecraft.server.characters import KeyedLocks
from rolecraft.server.history import conversation
from rolecraft.server.protocol import ApiError
from rolecraft.server.roleplay import LeadCleaner


def m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_turns_opening_and_message() -> None:
    conv = conversation([
        m("system", "persona"), m("assistant", "Hi there."), m("assistant", "Tea?"), m("user", "Yes."),
        m("assistant", "Here."), m("system", "note"), m("user", "Thanks."), m("user", "  And cake? "), m("tool", "x"),
    ])  # fmt: skip
    assert conv.opening == "Hi there.\nTea?"
    assert [(t.user, t.reply) for t in conv.turns] == [("Yes.", "Here.")]
    assert conv.message == "Thanks.\nAnd cake?"
    memory = conv.memory("Mira")
    assert memory.summary == 'Mira opened the conversation saying: "Hi there.\nTea?"'
    assert memory.recent == memory.log and memory.recent is not memory.log


@pytest.mark.parametrize("messages", [
    [m("system", "only a system prompt")],
    [m("user", "hi"), m("assistant", "hello")],
    [m("user", "   ")],
    [],
])  # fmt: skip
def test_no_user_message_is_a_400(messages: list[dict[str, str]]) -> None:
    with pytest.raises(ApiError) as caught:
        conversation(messages)
    assert caught.value.status == 400 and caught.value.code == "no_user_message"


@pytest.mark.parametrize("pieces", [
    ["Mira", " Holloway", ": Hello", " there"],
    ['  "', "Mira Holloway:", " Hello there"],
    ["Hello", " there"],
    ["\n", ' "Hello there'],
])  # fmt: skip
def test_lead_cleaner_matches_the_agents_clean(pieces: list[str]) -> None:
    cleaner = LeadCleaner("Mira Holloway")
    streamed = "".join(cleaner.feed(p) for p in pieces) + cleaner.flush()
    agent = RolePlayAgent(Character("Mira Holloway"), llm=None)  # type: ignore[arg-type]
    assert streamed == agent.clean("".join(pieces))


def test_lead_cleaner_keeps_a_short_reply() -> None:
    cleaner = LeadCleaner("Mira Holloway")
    assert cleaner.feed("Mi") == "" and cleaner.flush() == "Mi"


def test_keyed_locks_serialise_one_key_and_clean_up() -> None:
    async def run() -> list[str]:
        locks, order = KeyedLocks(), []

        async def use(key: str, tag: str, pause: float) -> None:
            release = await locks.acquire(key)
            order.append(f"{tag}+")
            await asyncio.sleep(pause)
            order.append(f"{tag}-")
            release()
            release()  # idempotent

        await asyncio.gather(use("a", "1", 0.05), use("a", "2", 0), use("b", "3", 0))
        assert locks._locks == {}
        return order

    order = asyncio.run(run())
    assert order.index("1-") < order.index("2+")  # same key: one after the other
    assert order.index("3+") < order.index("1-")  # another key does not wait
