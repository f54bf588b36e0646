"""The out-of-character rules on replies of the kinds small models really produce."""

from __future__ import annotations

import pytest

from rolecraft.ooc import check, is_out_of_character

IN_CHARACTER = [
    ("Mira Holloway", "I keep the lighthouse on Gull Rock, and Barnacle the cat keeps me."),
    ("Mira Holloway", "Languages? I have a little French from my grandmother, nothing more."),
    ("Mira Holloway", "Help you? Only if you can carry a lamp up ninety steps."),
    ("林晓", "我在杭州开了一家小书店，每天早上都会先泡一壶龙井。"),
]
OUT_OF_CHARACTER = [
    ("Mira Holloway", "As an AI language model, I don't have a lighthouse.", "assistant voice"),
    ("Mira Holloway", "I'm an AI assistant created to help you. How can I help you today?", "assistant voice"),
    ("Mira Holloway", "I do not have personal experiences, but lighthouses are interesting.", "assistant voice"),
    ("Mira Holloway", "Mira smiles and says that she loves the sea.", "third-person narration"),
    ("Mira Holloway", "*Holloway nods slowly* The storm is coming.", "third-person narration"),
    ("Mira Holloway", "The lamp is lit.\nUser: What about the cat?", "speaks for the user"),
    ("林晓", "作为一个人工智能，我没有书店。", "assistant voice"),
    ("林晓", "林晓笑着说：欢迎光临。", "third-person narration"),
]


@pytest.mark.parametrize(("name", "reply"), IN_CHARACTER)
def test_in_character_replies_pass(name: str, reply: str) -> None:
    verdict = check(reply, name)
    assert not verdict and verdict.reasons == ()


@pytest.mark.parametrize(("name", "reply", "reason"), OUT_OF_CHARACTER)
def test_breaks_are_caught_with_their_reason(name: str, reply: str, reason: str) -> None:
    verdict = check(reply, name)
    assert verdict.out_of_character and reason in verdict.reasons


def test_empty_reply_is_out_of_character() -> None:
    assert is_out_of_character("   ", "Mira Holloway")


def test_user_name_is_configurable() -> None:
    assert is_out_of_character("Fine.\nCaptain: And then?", "Mira Holloway", user="Captain")
    assert not is_out_of_character("The captain said the storm would pass.", "Mira Holloway", user="Captain")
