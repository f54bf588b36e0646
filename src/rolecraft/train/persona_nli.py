"""NLI rows about a persona, built from PersonaChat grounding data (the shared ConvAI2 files).

General NLI sets rarely show what APC's NLI model meets: a chatty first-person reply set against a
third-person fact about the speaker, with the contradiction hidden in a detail ("I started on the
violin" against "plays the guitar"). The ConvAI2 grounding files pair each persona fact with a
reply and say whether the reply used the fact. From them:

- entailed: a fact and a reply that used it;
- neutral: another fact of the same persona against that reply (the reply did not use it);
- contradicted: the fact with its value swapped for another persona's value of the same kind
  ("my favorite color is blue" -> "... is red", "i live in ohio" -> "... in texas", an age, a job, a
  count), or with its attitude reversed ("i love cats" -> "hates cats"), against a reply that used the
  original fact and names the value it swapped; and, for a share of facts, a reply that denies the
  fact among other small talk ("actually, i don't like cats").

Options add two-fact statements (`compound`), same-topic facts of other personas as neutral rows
(`hard_neutrals`), and replies edited to say another value or the opposite (`reply_edits`).
Facts become third-person statements about a made-up name, the way persona
statements are written.

    build_persona_nli([".../relevance_convai2_persona_valid.jsonl"], "persona_nli.jsonl")
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RolecraftError
from .common import read_records
from .pairs import write_jsonl

SOURCE = "convai2_persona_nli"
NAMES = (
    "Mara", "Jonas", "Priya", "Tomas", "Lena", "Kofi", "Aiko", "Ravi", "Elena", "Owen", "Sofia",
    "Malik", "Greta", "Diego", "Nadia", "Felix", "Hana", "Marcus", "Ingrid", "Yusuf", "Clara",
    "Emil", "Zara", "Liam", "Noor", "Pavel", "Iris", "Mateo", "Freya", "Samir",
)  # fmt: skip
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# A job-like word ("i am a teacher / dentist / librarian / nurse"), not a belief or a trait.
_JOB = re.compile(r"^(?:\w+(?:er|or|ist|ician|rian|ant|man)|nurse|chef|doctor|lawyer|cook|pilot|vet|model)$")
_NOT_JOBS = {
    "feminist", "buddhist", "atheist", "environmentalist", "activist", "perfectionist", "optimist",
    "pessimist", "minimalist", "introvert", "extrovert", "loner", "gamer", "vegetarian", "christian",
    "libertarian", "humanitarian", "woman", "man", "member", "lover", "fighter", "survivor", "owner",
    "mother", "father", "sister", "brother", "daughter", "grandmother", "grandfather", "partner",
    "runner", "reader", "dreamer", "believer", "follower", "supporter", "hunter", "collector",
    "leader", "player", "beginner", "foodie", "gentleman", "superhero", "hipster", "winner",
}  # fmt: skip


@dataclass(frozen=True)
class _Slot:
    """A kind of value a fact states, such that a persona has only one of it."""

    kind: str
    pattern: re.Pattern[str]  # the value is the group named "value"; "kind" refines the kind if present


_SLOTS = [
    _Slot("age", re.compile(r"^i am (?P<value>\d+) years? old")),
    _Slot("favorite", re.compile(r"^my favou?rite (?P<kind>\w+(?: \w+)?) (?:is|are) (?P<value>[\w' ]+?)\s*[.!]?$")),
    _Slot("place", re.compile(r"^i (?:live|grew up|was born|was raised|reside) in (?P<value>[\w' ]+?)\s*[.!]?$")),
    _Slot("place", re.compile(r"^i am from (?P<value>[\w' ]+?)\s*[.!]?$")),
    _Slot("job", re.compile(r"^i (?:work as|am) an? (?P<value>\w+)\s*[.!]?$")),
    _Slot("count", re.compile(r"^i have (?P<value>\d+|" + "|".join(_NUMBER_WORDS) + r") (?P<kind>\w+)")),
]
_LIKES = re.compile(r"^i (?P<verb>love|like|enjoy|adore) (?P<rest>.+?)\s*[.!]?$")
_DISLIKES = re.compile(
    r"^i (?P<verb>hate|dislike|do not like|don't like|can't stand|cannot stand) (?P<rest>.+?)\s*[.!]?$"
)
_STOP = {"to", "the", "a", "an", "my", "and", "of", "in", "on", "at", "with", "for", "very", "much", "lot"}
# Words whose opposite, put into a reply that used the fact, makes the reply say the other thing.
_OPPOSITES = dict(
    pair
    for a, b in (
        ("love", "hate"), ("loves", "hates"), ("enjoy", "hate"), ("tall", "short"), ("old", "young"),
        ("big", "small"), ("large", "small"), ("fast", "slow"), ("early", "late"), ("always", "never"),
        ("single", "married"), ("north", "south"), ("summer", "winter"), ("hot", "cold"), ("shy", "outgoing"),
        ("quiet", "loud"), ("rich", "poor"), ("happy", "sad"), ("city", "countryside"),
        ("introvert", "extrovert"), ("introverted", "extroverted"), ("morning", "night"),
        ("mornings", "nights"), ("healthy", "unhealthy"), ("indoors", "outdoors"), ("lazy", "active"),
    )
    for pair in ((a, b), (b, a))
)  # fmt: skip
_NEGATION = re.compile(r"\b(?:not|never|no|nor|without)\b|n't\b")


def third_person(fact: str, name: str) -> str:
    """ "i love my two dogs." -> "Mara loves Mara's two dogs." (the name stands for every "i" and "my")."""
    text = fact.strip().rstrip(".!").strip()
    text = re.sub(r"\bi'm\b|\bi am\b", "{n} is", text)
    text = re.sub(r"\bi've\b|\bi have\b", "{n} has", text)
    text = re.sub(r"\bi don't\b|\bi do not\b", "{n} does not", text)
    text = re.sub(
        r"\bi (can|can't|cannot|will|won't|would|could|should|was|wasn't|did|didn't|had|used|must|might)\b",
        r"{n} \1",
        text,
    )
    text = re.sub(
        r"\bi ((?:also|really|usually|often|always|never|just|still|only|sometimes) )?(\w+)\b",
        lambda m: "{n} " + (m.group(1) or "") + _conjugate(m.group(2)),
        text,
    )
    text = re.sub(r"\b(?:my|mine)\b", "{n}'s", text)
    text = re.sub(r"\b(?:me|myself|i)\b", "{n}", text)
    text = text.replace("{n}", name)
    return text[:1].upper() + text[1:] + "."


# Past forms stay as they are after "i" ("i just had surgery"), and a denial cannot put "do not" before them.
_PAST = re.compile(r"^(?:\w+[^e]ed|had|was|were|did|went|got|made|took|gave|saw|came|grew|met|left|lost|won|"
                   r"ran|began|broke|bought|built|caught|drove|felt|found|fought|kept|knew|led|spent|taught|wrote)$")


def _conjugate(verb: str) -> str:
    if _PAST.match(verb):
        return verb
    if verb == "do":
        return "does"
    if verb == "go":
        return "goes"
    if re.search(r"(?:s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


def _is_job(word: str) -> bool:
    return bool(_JOB.match(word)) and word not in _NOT_JOBS


def _mentions(reply: str, value: str) -> bool:
    """Whether the reply names the value (each content word, or a 4-letter stem of it)."""
    words = [w for w in re.findall(r"[\w']+", value.lower()) if w not in _STOP]
    if not words:
        return False
    reply_words = set(re.findall(r"[\w']+", reply.lower()))
    stems = {w[:4] for w in reply_words if len(w) >= 4}
    return all(w in reply_words or (len(w) >= 5 and w[:4] in stems) for w in words)


def _swapped(fact: str, values: dict[str, list[str]], rng: random.Random) -> tuple[str, str] | None:
    """(the fact with its value swapped, the original value) or None when no slot matches."""
    for slot in _SLOTS:
        m = slot.pattern.match(fact)
        if not m:
            continue
        value = m.group("value")
        if slot.kind == "job" and not _is_job(value):
            return None
        kind = f"{slot.kind}:{m.groupdict().get('kind') or ''}"
        others = [v for v in values.get(kind, []) if v != value]
        if slot.kind == "age":
            others = [str(n) for n in range(16, 90) if abs(n - int(value)) >= 6]
        elif slot.kind == "count":
            if value in ("1", "one"):  # "one horses" reads badly
                return None
            others = [w for i, w in enumerate(_NUMBER_WORDS[1:6], 2) if value not in (w, str(i))]
        if not others:
            return None
        start, end = m.span("value")
        new = rng.choice(others)
        head = fact[:start]
        if slot.kind == "job":  # "a teacher" -> "an engineer"
            head = re.sub(r"\ban?\s*$", "an " if new[0] in "aeiou" else "a ", head)
        return head + new + fact[end:], value
    for pattern, opposite in ((_LIKES, "hate"), (_DISLIKES, "love")):
        m = pattern.match(fact)
        if m:
            return f"i {opposite} {m.group('rest')}", m.group("rest")
    return None


def edit_reply(
    fact: str, reply: str, values: dict[str, list[str]], rng: random.Random
) -> tuple[str, str] | None:
    """(the fact with one value or word exchanged, the reply that used the fact with the same exchange)
    or None. The fact against the edited reply is a contradiction that sits in the reply, as in a
    role-play reply that gives the persona another home town or the opposite taste; the edited fact
    against the edited reply is entailed, so an edit is no sign of a contradiction in itself.

    The exchange is a swapped value (`_swapped`) or a word of the fact with an opposite
    (`_OPPOSITES`); it must occur in the reply, and replies with a negation are left alone (an
    exchange under "not" would not reverse what they say).
    """
    if _NEGATION.search(reply.lower()) or _NEGATION.search(fact):
        return None
    swap = _swapped(fact, values, rng)
    if swap is not None:
        old, new = _exchanged(fact, swap[0])
    else:
        shared = sorted(set(re.findall(r"[a-z]+", fact)) & set(_OPPOSITES) & set(re.findall(r"[a-z]+", reply.lower())))
        if not shared:
            return None
        old = rng.choice(shared)
        new = _OPPOSITES[old]
    pattern = re.compile(rf"\b{re.escape(old)}\b", re.IGNORECASE)
    if not old or not pattern.search(reply):
        return None

    def same_case(m: re.Match[str]) -> str:
        return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

    return pattern.sub(new, fact), pattern.sub(same_case, reply)


def _exchanged(before: str, after: str) -> tuple[str, str]:
    """The words of `before` that `after` replaced: ("i live in ohio", "i live in new york") -> ("ohio", "new york")."""
    a, b = before.rstrip(".!").split(), after.rstrip(".!").split()
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return " ".join(a[start : len(a) - end]), " ".join(b[start : len(b) - end])


def negate(fact: str) -> str | None:
    """ "i like cats." -> "i do not like cats" (first person kept); None for facts already negative
    or not of a simple "i <verb> ..." / "my ... is ..." shape."""
    text = fact.strip().rstrip(".!").strip()
    if re.search(r"\b(?:not|never|no|n't|cannot)\b", text):
        return None
    for pattern, replacement in (
        (r"^i (am|was|can|will|would|could|should)\b", r"i \1 not"),
        (r"^i have (been|had|done|seen|lived|worked|always)\b", r"i have never \1"),
        (r"^i have\b", "i do not have"),
        (r"^(my [\w ]+?) (is|are|was|were)\b", r"\1 \2 not"),
        (r"^i (?:also |really |usually |often |always |just |still |sometimes )?([a-z]+)\b", r"i do not \1"),
    ):
        m = re.match(pattern, text)
        if not m:
            continue
        if m.lastindex and "do not" in replacement and _PAST.match(m.group(1)):
            return None  # not "i do not had surgery"
        return m.expand(replacement) + text[m.end() :]
    return None


_OPENERS = ("", "", "actually, ", "honestly, ", "no, ", "to be honest, ", "well, ")


def _denials(fact: str, reply: str, others: Sequence[str], rng: random.Random) -> list[tuple[str, str, str]]:
    """(statement fact, reply, label) rows where a reply denies a fact, among other small talk.

    The fact against a reply denying it is a contradiction; the denial stated as the fact is entailed
    by that reply; and the denial stated as the fact contradicts the original reply, which used the fact.
    """
    denied = negate(fact)
    if denied is None:
        return []
    answer = rng.choice(_OPENERS) + denied
    if rng.random() < 0.5:
        answer = answer.replace("do not", "don't").replace(" am not", "'m not")
    answer += rng.choice((".", "!", " ."))
    if others and rng.random() < 0.7:  # hide the denial in small talk, as role-play replies do
        talk = rng.choice(others)
        answer = f"{talk} {answer}" if rng.random() < 0.5 else f"{answer} {talk}"
    if rng.random() < 0.5:
        answer = answer[:1].upper() + answer[1:]
    return [(fact, answer, "contradicted"), (denied, answer, "entailed"), (denied, reply, "contradicted")]


def _slot_values(facts: Iterable[str]) -> dict[str, list[str]]:
    values: dict[str, set[str]] = defaultdict(set)
    for fact in facts:
        for slot in _SLOTS:
            m = slot.pattern.match(fact)
            if m:
                if slot.kind != "job" or _is_job(m.group("value")):
                    values[f"{slot.kind}:{m.groupdict().get('kind') or ''}"].add(m.group("value"))
                break
    return {k: sorted(v) for k, v in values.items()}


def _read(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for pos, rec in read_records(Path(path)):
            missing = {"fact", "question", "response", "label", "dialog", "turn"} - set(rec)
            if missing:
                raise RolecraftError(f"{path}, {pos}: missing field(s) {', '.join(sorted(missing))}.")
            rows.append(rec)
    return rows


def persona_nli_rows(
    paths: Sequence[str | Path],
    seed: int = 7,
    swaps: int = 2,
    negations: float = 0.3,
    compound: float = 0.0,
    hard_neutrals: float = 0.0,
    reply_edits: float = 0.0,
) -> list[dict[str, Any]]:
    """Canonical NLI rows (entailed / neutral / contradicted) from ConvAI2 grounding files.

    `swaps`: at most this many swapped-value contradictions per used fact. `negations`: the share of
    used facts that also give rows with a reply that denies the fact (see `_denials`). `compound`: the
    share of statements joined with a second fact of the persona that the reply does not touch, label
    kept (a reply that expresses or contradicts one half of a statement still does so). `hard_neutrals`:
    the share of used facts that also give a neutral row with a similar fact of another persona (same
    topic, other content: "likes to swim" against a reply about skiing), so that sharing a topic with
    the reply is not taken for entailment. `reply_edits`: the share of used facts that also give the
    two rows of `edit_reply` (the contradiction in the reply, the statement fixed).
    """
    rng = random.Random(seed)
    rows = _read(paths)
    facts = [r["fact"].strip().lower() for r in rows]
    values = _slot_values(set(facts))
    by_turn: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for rec in rows:
        by_turn[(str(rec["dialog"]), int(rec["turn"]))].append(rec)
    neighbours = _neighbours(sorted(set(facts))) if hard_neutrals > 0 else {}
    out = []
    said: dict[str, list[str]] = defaultdict(list)  # every reply of a dialogue, for small talk
    for (dialog, _), turn in sorted(by_turn.items()):
        said[dialog].append(turn[0]["response"].strip())
    for (dialog, _), turn in sorted(by_turn.items()):
        digest = hashlib.blake2b(dialog.encode("utf-8"), digest_size=4).digest()
        name = NAMES[int.from_bytes(digest, "big") % len(NAMES)]
        used = [r for r in turn if int(r["label"]) == 1]
        unused = [r for r in turn if int(r["label"]) == 0]
        for rec in used:
            fact, reply, query = rec["fact"].strip().lower(), rec["response"].strip(), rec["question"].strip()
            spare = [r["fact"].strip().lower() for r in unused]  # facts this reply neither uses nor denies
            base = {"character": name, "query": query, "response": reply, "source": SOURCE,
                    "split": str(rec.get("split") or "")}

            def row(
                fact: str, label: str, base: dict[str, Any] = base, spare: list[str] = spare, **changes: str
            ) -> dict[str, Any]:
                statement = third_person(fact, base["character"])
                if compound and spare and rng.random() < compound:
                    # Persona statements often join two facts; the reply's relation to one decides.
                    other = third_person(rng.choice([f for f in spare if f != fact] or spare), base["character"])
                    if not other.startswith(base["character"]):
                        other = other[:1].lower() + other[1:]
                    statement = f"{statement[:-1]}, and {other}"
                head = {"character": base["character"], "statement": statement}
                return {**head, **base, "label": label, **changes}

            out.append(row(fact, "entailed"))
            if unused:
                out.append(row(rng.choice(unused)["fact"].strip().lower(), "neutral"))
            # Up to `swaps` different wrong values per fact: contradictions are the rarest label.
            seen = set()
            for _ in range(swaps):
                swap = _swapped(fact, values, rng)
                if swap and swap[0] not in seen and _mentions(reply, swap[1]):
                    seen.add(swap[0])
                    out.append(row(swap[0], "contradicted"))
            if hard_neutrals > 0 and rng.random() < hard_neutrals:
                own = {r["fact"].strip().lower() for r in used}
                near = [f for f in neighbours.get(fact, []) if f not in own and not _shares_words(f, reply)]
                if near:
                    out.append(row(near[0], "neutral"))
            if reply_edits > 0 and rng.random() < reply_edits:
                edited = edit_reply(fact, reply, values, rng)
                if edited:
                    out.append(row(fact, "contradicted", response=edited[1]))
                    out.append(row(edited[0], "entailed", response=edited[1]))
            if rng.random() < negations:
                others = [r for r in said[dialog] if r != reply]
                for statement, answer, label in _denials(fact, reply, others, rng):
                    out.append(row(statement, label, response=answer))
    return out


def _neighbours(facts: list[str], k: int = 8) -> dict[str, list[str]]:
    """Per fact, up to `k` other facts on a similar topic (MiniLM cosine 0.45-0.9), most similar first.

    Facts of an exclusive kind are left out: a similar fact of that kind (another favourite colour)
    would contradict a reply rather than leave it neutral.
    """
    from ..retrieval import embed

    open_facts = [f for f in facts if not any(slot.pattern.match(f) for slot in _SLOTS)]
    if len(open_facts) < 2:
        return {}
    vectors = embed(open_facts)
    similarity = vectors @ vectors.T
    out = {}
    for i, fact in enumerate(open_facts):
        order = np.argsort(-similarity[i])
        out[fact] = [open_facts[j] for j in order if j != i and 0.45 <= similarity[i, j] < 0.9][:k]
    return out


def _shares_words(fact: str, reply: str) -> bool:
    """Whether the reply repeats a content word of the fact (then it may well express it)."""
    reply_words = {w[:5] for w in re.findall(r"[\w']+", reply.lower())}
    return any(w[:5] in reply_words for w in re.findall(r"[\w']+", fact.lower()) if len(w) >= 4 and w not in _STOP)


def build_persona_nli(
    paths: Sequence[str | Path],
    output: str | Path,
    seed: int = 7,
    swaps: int = 2,
    negations: float = 0.3,
    compound: float = 0.0,
    hard_neutrals: float = 0.0,
    reply_edits: float = 0.0,
) -> Path:
    """Write `persona_nli_rows` as JSON Lines to `output` (atomically); returns the path."""
    output = Path(output)
    write_jsonl(output, persona_nli_rows(paths, seed, swaps, negations, compound, hard_neutrals, reply_edits))
    return output
