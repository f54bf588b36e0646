"""A scripted teacher for the synthesis tests, and unit tests of the strict parsers and text rules.

`ScriptedLLM` implements the LLM protocol by reading the synthesis prompt and answering it in the
asked-for JSON (or with whatever canned replies a test queues). It is a fake for control flow only:
the tests that use it check resuming, counting and formats, never the quality of generation. It
continues an assistant prefill the way a real model does (the reply leaves the prefill out).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rolecraft.llm.base import BaseLLM, Message, Sampling, cut_at_stop, split_prefill
from rolecraft.synth.parse import (
    ParseError,
    clean_line,
    first_json,
    first_list,
    label_of,
    mentions,
    name_parts,
    normalize,
    stable_id,
    string_list,
)
from rolecraft.synth.queries import check_query
from rolecraft.synth.statements import check_statement


def _field(text: str, label: str) -> str:
    m = re.search(rf"^{label}:? ?(.*)$", text, flags=re.MULTILINE)
    return m.group(1).strip() if m else ""


def smart_reply(messages: list[Message]) -> str:
    """A well-formed answer to any synthesis prompt (English prompts), including the prefill."""
    system, user = messages[0]["content"], [m for m in messages if m["role"] == "user"][-1]["content"]
    name = (re.search(r"^Character: (.+)$", user, re.M) or re.search(r"about (.+?)[:\n]", user))
    who = name.group(1).strip() if name else "Someone"
    if "short facts" in system:
        text = user.split("Text:\n", 1)[1].split("\n\nWrite every fact", 1)[0]
        facts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
        return json.dumps(facts + ["She also likes tea."])
    if "user messages" in system:
        stmt = _field(user, f"Fact about {who}")
        word = max(re.findall(r"[A-Za-z]+", stmt) or ["that"], key=len)
        return json.dumps([f"Tell me about {word.lower()}, {who}?", f"Do you care about {word.lower()}?",
                           f"What do you think of {word.lower()}?", "Hi"])
    if "is needed to answer" in system:
        stmt, query = _field(user, f"Fact about {who}"), _field(user, f"Message to {who}")
        shared = {w.lower() for w in re.findall(r"[A-Za-z]{5,}", stmt)} & {
            w.lower() for w in re.findall(r"[A-Za-z]{5,}", query)}
        return json.dumps({"label": "relevant" if shared else "irrelevant"})
    if "write replies" in system:
        stmt = _field(user, f"Fact about {who}")
        return json.dumps({"entailed": f"Yes. {stmt}", "neutral": "The weather is mild today.",
                           "contradicted": f"No, it is not true that {stmt[0].lower() + stmt[1:]}"})
    if "compare a reply" in system:
        reply = _field(user, f"Reply by {_field(user, 'Reply by').split(':')[0]}") or user
        label = "entailed" if "Yes." in reply else "contradicted" if "No," in reply else "neutral"
        if "weather" in reply:  # a disagreeing second pass, so rows with two labels occur
            label = "contradicted"
        return json.dumps({"label": label})
    if "write scenes" in system:
        return json.dumps({"type": "work", "location": "An office, at night",
                           "background": f"{who} reads a report alone while the city sleeps."})
    prime = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    if "role-play dialogues" in system and prime.endswith('"content": "'):  # turn by turn
        n = prime.count('"content"')
        bait = re.search(r"asks .+? about (.+?)\. ", user)
        lines = ["Long night at the office?", "Sam again, at this hour.", "I have reports to finish, Sam.",
                 "Then I will leave you to them.", "He never knocks first.", "Good night, Sam."]
        text = f"Have you heard of {bait.group(1)}?" if bait and n == 1 else lines[n - 1]
        return prime + text + '"}]'
    if "role-play dialogues" in system:
        who = re.findall(r"([A-Z][a-z]+(?: [A-Z][a-z]+)?) cannot know", user) or [""]
        person = who[0] or re.sub(r"'s thoughts.*", "", user.split("Include ", 1)[1]).strip()
        bait = re.search(r"asks .+? about (.+?)\. ", user)
        turns = [{"speaker": "Sam", "action": "speaking",
                  "content": f"Have you heard of {bait.group(1)}?" if bait else "Long night?"},
                 {"speaker": person, "action": "thinking", "content": "What is this about?"},
                 {"speaker": person, "action": "speaking", "content": "I have work to do, Sam."},
                 {"speaker": "Sam", "action": "thinking", "content": "Others' thoughts are left out."}]
        return json.dumps(turns)
    raise AssertionError(f"unknown prompt: {system}")


class ScriptedLLM(BaseLLM):
    """Answers with `queue` replies first (one per call, in order), then with `script(messages)`."""

    name = "scripted"
    context_window = 4096

    def __init__(self, queue: list[str] | None = None, script: Callable[[list[Message]], str] = smart_reply,
                 delay: float = 0.0):
        super().__init__(Sampling())
        self.queue, self.script, self.delay = list(queue or []), script, delay
        self.lock = threading.Lock()
        self.calls = 0

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        with self.lock:
            self.calls += 1
            full = self.queue.pop(0) if self.queue else self.script(messages)
        if self.delay:
            time.sleep(self.delay)
        prefill = split_prefill(messages)[1]
        text = full[len(prefill):] if prefill and full.startswith(prefill) else full
        return cut_at_stop(text, (sampling or self.sampling).with_(**overrides).stop)[0]

    def stream(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> Iterator[str]:
        yield self.chat(messages, sampling, **overrides)


# ---------------------------------------------------------------------------------------------
# parsers


def test_first_json_takes_the_first_value_of_the_asked_type():
    assert first_json('Sure! ```json\n["a", "b"]\n``` done', list) == ["a", "b"]
    assert first_json('x {"label": "relevant"} y {"label": "no"}', dict) == {"label": "relevant"}
    with pytest.raises(ParseError, match="no list"):
        first_json('{"facts": ["a"]} then ["b"]', list)  # the first value is an object


@pytest.mark.parametrize(("text", "reason"), [
    ("no brackets here", "no list"),
    ("['single', 'quotes']", "bad json"),
    ('["trailing", "comma",]', "bad json"),
])
def test_first_json_is_strict(text, reason):
    with pytest.raises(ParseError) as info:
        first_json(text, list)
    assert info.value.reason == reason


def test_a_list_cut_off_by_the_length_limit_keeps_its_complete_items():
    assert first_list('["one", "two", "thr') == (["one", "two"], True)
    assert first_list('["one", "two"]') == (["one", "two"], False)
    with pytest.raises(ParseError, match="bad json"):
        first_list('["one", \'two\']')  # a broken item, not a cut-off one
    with pytest.raises(ParseError, match="empty"):
        string_list('["", "  "]')
    with pytest.raises(ParseError, match="not strings"):
        string_list('[1, 2]')


def test_labels_must_be_one_of_the_allowed():
    assert label_of('{"label": "Relevant."}', ("relevant", "irrelevant")) == "relevant"
    with pytest.raises(ParseError, match="wrong label"):
        label_of('{"label": "maybe"}', ("relevant", "irrelevant"))
    with pytest.raises(ParseError, match="no object"):
        label_of("relevant", ("relevant", "irrelevant"))


def test_ids_are_stable_and_normalization_ignores_form():
    assert stable_id("a", 1, ["x"]) == stable_id("a", 1, ["x"]) != stable_id("a", 2, ["x"])
    assert normalize("Eve  likes TEA.") == normalize("eve likes tea")
    assert clean_line('1. "Eve likes tea."') == "Eve likes tea."


# ---------------------------------------------------------------------------------------------
# text rules


def test_names_match_whole_words_and_name_parts():
    assert name_parts("Ludwig van Beethoven") == ["Ludwig van Beethoven", "Ludwig", "Beethoven"]
    assert mentions("Beethoven wrote nine symphonies.", "Ludwig van Beethoven")
    assert not mentions("Everyone trusts her.", "Eve")
    assert mentions("爱丽丝喜欢下棋。", "爱丽丝")


@pytest.mark.parametrize(("text", "reason"), [
    ("Eve studied psychology at university.", None),
    ("She studied psychology at university.", "pronoun"),
    ("他喜欢下棋。", "pronoun"),
    ("I studied psychology at university, says Eve.", "first person"),
    ("The agency hired a new director.", "no name"),
    ("Eve owns three racing yachts in Monaco.", "ungrounded"),
    ("Did Eve study psychology?", "question"),
    ("Eve studied.", "too short"),
    ("Eve", "too short"),
])
def test_statement_rules(text, reason):
    source = "Eve originally studied psychology at university. 他喜欢下棋。"
    assert check_statement(text, "Eve", source) == reason


def test_chinese_statements_follow_the_same_rules():
    source = "爱丽丝是一名密码学家，她在大学教书。"
    assert check_statement("爱丽丝是一名密码学家。", "爱丽丝", source) is None
    assert check_statement("她在大学教书。", "爱丽丝", source) == "pronoun"
    assert check_statement("爱丽丝养了三匹赛马。", "爱丽丝", source) == "ungrounded"


@pytest.mark.parametrize(("text", "reason"), [
    ("Do you paint, Eve?", None),
    ("Tell me about your hobbies.", None),
    ("Eve has a secret passion for painting.", "copies statement"),
    ("Painting is nice.", "not addressed"),
    ("Hi", "too short"),
])
def test_query_rules(text, reason):
    assert check_query(text, "Eve", "Eve has a secret passion for painting.") == reason


@pytest.mark.parametrize(("reply", "third"), [
    ("Eve has been assigned to the case.", True),
    ("She paints at night.", True),
    ("她喜欢画画。", True),
    ("Eve, as you know, I never paint.", False),
    ("It is late; I should go.", False),
    ("I paint when nobody is watching.", False),
])
def test_nli_replies_are_spoken_by_the_character(reply, third):
    from rolecraft.synth.labels import third_person

    assert third_person(reply, "爱丽丝" if "她" in reply else "Eve") is third
