"""Rules that catch a reply breaking character: assistant voice, third-person narration, speaking for the user.

Small models drift out of character in a handful of recognisable ways. The rules here are cheap and
deliberately conservative (a false alarm costs a training pair; a miss teaches the model to break character),
and each hit names its reason so reports can count them. English and Chinese phrasings are covered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Phrases of a generic assistant, not of a character.
_ASSISTANT = [
    r"\bas an? (ai|a\.i\.|artificial intelligence|language model|llm|chatbot|assistant|virtual assistant)\b",
    r"\bi(?:'m| am) (an? )?(ai|a\.i\.|artificial intelligence|language model|large language model|chatbot"
    r"|virtual assistant|ai assistant|computer program)\b",
    r"\b(i|we) (do not|don't|cannot|can't) have (personal )?(feelings|emotions|a body|personal experiences)\b",
    r"\bmy (training data|knowledge cutoff|programming)\b",
    r"\b(openai|chatgpt|gpt-?[34]|anthropic|hugging ?face|smollm)\b",
    r"\bhow (can|may) i (help|assist) you( today)?\b",
    r"\bi(?:'m| am) (here|happy|glad) to (help|assist)\b",
    r"\bis there anything else i can (help|assist)",
    # refusals found in the APC paper's own DPO sample (replies it kept as "chosen")
    r"\bi(?:'m| am) (unable|not able) to (provide|share|disclose|express|offer) (any )?(personal|subjective)\b",
    r"\b(violate|breach) (\w+ )?privacy\b",
    r"\bas a fictional character\b",
    # the embedded model after DPO: "I am not able to assist with that"
    r"\bi(?:'m| am) (not able|unable) to (help|assist)\b",
    r"\bi can(?:'t|not) (help|assist) (you )?with that\b",
    r"\bi (do not|don't) (possess|have) (any )?personal (experiences|preferences|opinions|feelings|emotions)\b",
    r"作为(一个|一名)?(人工智能|AI|语言模型|助手)",
    r"我是(一个|一名)?(人工智能|AI|语言模型|AI助手|聊天机器人)",
    r"有什么(可以|能)帮(你|您)",
]
# Seen in the embedded model's replies during `rolecraft eval apc` (assistant identity with adjectives in between,
# "writing assistant ... helping users", "a machine designed to ..."); kept narrow so robots and teaching assistants
# in a persona are not flagged.
_ASSISTANT += [
    r"\bi(?:'m| am) (?:not (?:just|only) )?(?:an? )?(?:(?!not\b)[\w-]+,? (?:and )?){0,4}?"
    r"(ai|a\.i\.|chatbot|language model|virtual assistant)\b",
    r"\b(ai|writing|virtual|digital) assistant\b",
    r"\b(help|helping|assist|assisting|serve|serving) (our |the )?users\b",
    r"\b(robot|machine|program) (designed|programmed) (for|to)\b",
    r"\bi(?:'ve| have) been (designed|programmed)\b",
]
_ASSISTANT_RE = re.compile("|".join(_ASSISTANT), re.IGNORECASE)

_THIRD_PERSON_VERBS = (
    r"(says|said|replies|replied|answers|answered|smiles|smiled|nods|nodded|laughs|laughed|thinks|thought"
    r"|looks|looked|responds|responded|explains|explained|sighs|sighed|shrugs|shrugged|grins|grinned)"
)


@dataclass(frozen=True)
class Verdict:
    """Why a reply is out of character; empty `reasons` means it stays in character."""

    reasons: tuple[str, ...]

    @property
    def out_of_character(self) -> bool:
        return bool(self.reasons)

    def __bool__(self) -> bool:
        return self.out_of_character


def check(reply: str, character: str, user: str = "User") -> Verdict:
    """Apply every rule to one reply of `character` talking to `user`."""
    text = reply.strip()
    reasons: list[str] = []
    if not text:
        return Verdict(("empty",))
    if _ASSISTANT_RE.search(text):
        reasons.append("assistant voice")
    if _narrates_self(text, character):
        reasons.append("third-person narration")
    if _speaks_for_user(text, user):
        reasons.append("speaks for the user")
    return Verdict(tuple(reasons))


def is_out_of_character(reply: str, character: str, user: str = "User") -> bool:
    return check(reply, character, user).out_of_character


def _name_forms(character: str) -> list[str]:
    """The full name and, for multi-word Latin names, the first and last word ("Mira Holloway" → Mira, Holloway)."""
    name = character.strip()
    forms = [name]
    words = name.split()
    if len(words) > 1:
        forms += [w for w in (words[0], words[-1]) if len(w) > 2]
    return [re.escape(f) for f in forms if f]


def _narrates_self(text: str, character: str) -> bool:
    names = "|".join(_name_forms(character))
    if not names:
        return False
    # "Mira smiles and says ...", "*Mira nods*", "Mira replied:" — the character described from outside.
    if re.search(rf"(^|[*(\[.!?]\s*)({names})\s+(\w+ly\s+)?{_THIRD_PERSON_VERBS}\b", text):
        return True
    # "Mira Holloway resides on Skerrow...", "Mira Holloway does whatever she needs": a sentence that starts
    # with the character's own name as the subject of a third-person verb (SmolLM2-135M does this a lot).
    if re.search(rf"(^|[.!?…]\s+|\n\s*)({names})\s+(is|was|has|had|does|did|[a-z]+s)\b", text):
        return True
    # "Mira: ..." at the start of a line after the first: the model writing a script, not speaking.
    if re.search(rf"\n\s*({names})\s*[:：]", text):
        return True
    # Chinese narration: "林晓笑着说", "林晓回答".
    return bool(re.search(rf"({names})(笑着|微笑着|点点头|点头)?(说道|说|回答|答道|想)", text))


def _speaks_for_user(text: str, user: str) -> bool:
    users = {re.escape(user), "User", "You", "用户", "你"}
    pattern = "|".join(sorted(users, key=len, reverse=True))
    return bool(re.search(rf"(^|\n)\s*({pattern})\s*[:：]", text))
