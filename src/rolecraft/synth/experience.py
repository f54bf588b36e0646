"""Step 5: Character-LLM experience reconstruction.

profile passages -> scenes -> experience dialogues -> protective scenes -> SFT rows.

- scenes (`datasets/scenes.jsonl`): `{"id", "character", "type", "location", "background", "passage",
  "chunk"}`, one or more per passage chunk; the background must name the character.
- experiences (`datasets/experiences.jsonl`) and protective scenes (`datasets/protective.jsonl`):
  `{"id", "character", "scene", "type", "location", "background", "turns": [{"speaker", "action",
  "content"}]}`; action is "thinking" or "speaking", and only the character's thoughts are kept (they
  are what the model learns to think). Protective rows add `"bait": {"kind", "topic"}`: someone asks
  about a thing the character cannot know (an invention, an invented relative, or, for characters set
  before 1950, modern technology) and the character stays in its world.
- Dialogues are written in one of two modes (`dialogue=`): "whole" asks for the whole JSON list in
  one call (good teachers); "turns" fixes the plan (the other person speaks, the character thinks,
  speaks, ...) and asks for one short turn at a time, primed inside the JSON, so a small teacher
  cannot break the shape or loop past a turn. "auto" (the default) picks "turns" for local teachers
  and "whole" for HTTP ones.
- SFT (`datasets/sft.jsonl`): `{"id", "kind", "messages"}` in chat format: a system meta prompt with
  the location and status, then user turns (what the others say, "Name: text") and assistant turns
  (the character's thoughts and words, "(thinking) ..." lines kept), starting with a user turn and
  ending with an assistant turn.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from ..errors import RolecraftError
from ..llm.base import Message
from . import prompts
from .common import Target, chunks, language
from .jobs import Dropped, Item, Outcome, Step, Teacher
from .parse import (
    ParseError,
    copies,
    first_json,
    first_list,
    is_chinese,
    mentions,
    normalize,
    similarity,
    stable_id,
    text_length,
)

# ---------------------------------------------------------------------------------------------
# scenes


def parse_scene(text: str, name: str, source: str = "") -> dict[str, str]:
    value = first_json(text, dict)
    scene = {}
    for key in ("type", "location", "background"):
        v = value.get(key)
        if not isinstance(v, str) or not v.strip():
            raise ParseError(f"missing {key}")
        scene[key] = " ".join(v.split())
    limits = {"type": 4, "location": 25, "background": 80}
    for key, most in limits.items():
        size = text_length(scene[key])
        if size > (most * 2 if is_chinese(scene[key]) else most):
            raise ParseError(f"{key} too long")
    if text_length(scene["background"]) < 5:
        raise ParseError("background too short")
    if not mentions(scene["background"], name):
        raise ParseError("no name")
    examples = prompts.example_texts("zh" if is_chinese(scene["background"]) else "en")
    lang = "zh" if is_chinese(scene["background"]) else "en"
    if copies(scene["background"], examples) or copies(scene["location"], examples, 0.6) or any(
        prompts.leaks_example(scene[k], source, lang) for k in ("location", "background")
    ):
        raise ParseError("copies example")
    scene["type"] = scene["type"].lower()
    return scene


class ScenesStep(Step):
    name = "scenes"
    version = prompts.VERSIONS["scenes"]

    def __init__(self, target: Target, per_chunk: int = 1, chunk_chars: int = 800):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.per_chunk = per_chunk
        self.chunk_chars = chunk_chars

    def items(self) -> list[Item]:
        name, out = self.character.name, {}
        for index, text in chunks(self.character.passages, self.chunk_chars):
            for k in range(self.per_chunk):
                item = Item(stable_id(self.name, self.version, name, text, k), {"passage": index, "text": text})
                out[item.id] = item
        return list(out.values())

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        assert teacher is not None
        name, text = self.character.name, item.data["text"]
        scene = teacher.ask(prompts.scene(name, text, self.lang), lambda t: parse_scene(t, name, text),
                            key=item.id, max_new_tokens=120)
        rid = stable_id("scene", name, normalize(scene["background"]))
        return Outcome(rows=[{"id": rid, "character": name, **scene, "passage": item.data["passage"],
                              "chunk": item.id}])


# ---------------------------------------------------------------------------------------------
# dialogues


_SENTENCE = re.compile(r"[^.!?。！？]+[.!?。！？]+")


def _repetitive(text: str) -> bool:
    """A degenerate loop: few distinct word 3-grams for the length, or a sentence said twice."""
    tokens = list(text) if is_chinese(text) else text.lower().split()
    grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    if len(grams) >= 12 and len(set(grams)) / len(grams) < 0.6:
        return True
    sentences = [normalize(s) for s in _SENTENCE.findall(text) if text_length(s) >= 4]
    return len(sentences) != len(set(sentences))


def trim_cut_sentence(content: str) -> str:
    """Drop a last sentence that the length limit cut off ("… oppose the Lumin"), when one came before."""
    content = content.strip()
    if content.endswith((".", "!", "?", "。", "！", "？", "…", ")", "*")) or text_length(content) < 25:
        return content
    done = _SENTENCE.findall(content)
    return "".join(done).strip() if done else content


def content_problem(content: str, seen: set[str], source: str) -> str:
    """Why a turn's content is unusable ("" when it is fine); `seen` holds the earlier turns' contents
    (normalized) and `source` is the scene the turn is for."""
    lang = "zh" if is_chinese(content) else "en"
    if _repetitive(content):
        return "repetitive"
    if text_length(content) > (160 if lang == "zh" else 80):
        return "too long"
    if normalize(content) in seen or any(similarity(content, s) >= 0.6 for s in seen):
        return "duplicate"
    if copies(content, prompts.example_texts(lang)) or prompts.leaks_example(content, source, lang):
        return "copies example"
    return ""


def check_dialogue(turns: list[dict[str, str]], name: str) -> None:
    if not turns:
        raise ParseError("empty")
    if not any(t["speaker"] == name and t["action"] == "speaking" for t in turns):
        raise ParseError("character silent")
    if not any(t["speaker"] != name for t in turns):
        raise ParseError("no other speaker")


def parse_dialogue(text: str, name: str, source: str = "") -> tuple[list[dict[str, str]], list[str]]:
    """Validated turns and the reasons of turns left out; raises ParseError when no dialogue remains.

    A turn is left out when its speaker or content is missing ("bad turn"), its action is not
    thinking/speaking ("wrong action"), someone other than the character thinks ("others' thoughts"),
    it loops ("repetitive"), runs long ("too long"), repeats an earlier turn ("duplicate") or the
    prompt's worked example ("copies example"). A list cut off by the length limit keeps its complete
    turns. The dialogue needs the character speaking and someone else.
    """
    value, _ = first_list(text)
    turns, dropped, seen = [], [], set()
    for raw in value:
        if not isinstance(raw, dict):
            dropped.append("bad turn")
            continue
        speaker, action, content = raw.get("speaker"), raw.get("action"), raw.get("content")
        if not (isinstance(speaker, str) and speaker.strip() and isinstance(content, str) and content.strip()):
            dropped.append("bad turn")
            continue
        speaker, content = " ".join(speaker.split()), " ".join(content.split())
        action = action.strip().lower() if isinstance(action, str) else ""
        is_self = mentions(speaker, name)
        if action not in prompts.ACTIONS:
            reason = "wrong action"
        elif action == "thinking" and not is_self:
            reason = "others' thoughts"
        elif text_length(speaker) > 6:
            reason = "bad turn"
        else:
            reason = content_problem(content, seen, source)
        if reason:
            dropped.append(reason)
            continue
        seen.add(normalize(content))
        turns.append({"speaker": name if is_self else speaker, "action": action, "content": content})
    check_dialogue(turns, name)
    return turns, dropped


# Turn-by-turn ("turns" mode): the runner fixes who speaks and how, the teacher writes one short
# content at a time, primed inside the JSON so the shape cannot break and a loop cannot run past
# one turn. This is what makes a 135M teacher produce dialogues at all; a large teacher does
# better in "whole" mode (one call per dialogue).
TURN_PLAN = (("other", "speaking"), ("self", "thinking"), ("self", "speaking"), ("other", "speaking"),
             ("self", "thinking"), ("self", "speaking"))
_OTHER = {"en": "Visitor", "zh": "来客"}


def _after(text: str, marker: str) -> str:
    return text.rsplit(marker, 1)[1] if marker in text else text


def _speaker_name(text: str, name: str) -> str:
    speaker = " ".join(_after(text, '"speaker": "').split('"', 1)[0].split())
    if not speaker or text_length(speaker) > 4 or not re.fullmatch(r"[\w .'’·-]+", speaker):
        raise ParseError("bad speaker")
    if mentions(speaker, name):
        raise ParseError("speaker is the character")
    return speaker


def _turn_content(text: str, seen: set[str], source: str, check: Any = None) -> str:
    content = " ".join(_after(text, '"content": "').split('"', 1)[0].replace("\\n", " ").split())
    content = trim_cut_sentence(content)
    if text_length(content) < 2:
        raise ParseError("empty")
    reason = content_problem(content, seen, source)
    if reason:
        raise ParseError(reason)
    if check is not None:
        check(content)
    return content


def dialogue_turns(
    teacher: Teacher,
    build: Any,
    name: str,
    key: Any,
    source: str,
    lang: str,
    first_turn_check: Any = None,
) -> tuple[list[dict[str, str]], list[str]]:
    """A dialogue written turn by turn; `build(prime)` gives the messages for a primed answer."""
    try:
        other = teacher.ask(build('[{"speaker": "'), lambda t: _speaker_name(t, name), key=[key, "speaker"],
                            max_new_tokens=8, stop=('"',), tries=1)  # a name is nice to have, not worth retries
    except Dropped:
        other = _OTHER[lang]
    turns: list[dict[str, str]] = []
    seen: set[str] = set()
    dropped: list[str] = []
    for i, (who, action) in enumerate(TURN_PLAN):
        speaker = name if who == "self" else other
        head = (json.dumps(turns, ensure_ascii=False)[:-1] + ", ") if turns else "["
        prime = head + "{" + f'"speaker": {json.dumps(speaker, ensure_ascii=False)}, "action": "{action}", "content": "'
        check = first_turn_check if i == 0 else None
        try:
            content = teacher.ask(build(prime), lambda t, c=check: _turn_content(t, seen, source, c),
                                  key=[key, i], max_new_tokens=60, stop=('"',))
        except Dropped as exc:
            if i == 0:
                raise
            dropped.append(exc.reason)
            if action == "thinking":
                continue  # a thought can be left out; the dialogue goes on
            break  # the dialogue ends here; what was written so far may still be a dialogue
        seen.add(normalize(content))
        turns.append({"speaker": speaker, "action": action, "content": content})
    try:
        check_dialogue(turns, name)
    except ParseError as exc:
        raise Dropped(exc.reason) from None
    return turns, dropped


def _scene_fields(scene: dict[str, Any]) -> dict[str, Any]:
    return {"scene": scene["id"], "type": scene["type"], "location": scene["location"],
            "background": scene["background"]}


def _scenes(target: Target) -> list[dict[str, Any]]:
    return [s for s in target.rows("scenes") if {"id", "location", "background", "type"} <= s.keys()]


DIALOGUE_MODES = ("auto", "whole", "turns")


def _mode(mode: str, teacher: Teacher) -> str:
    if mode not in DIALOGUE_MODES:
        raise RolecraftError(f"Unknown dialogue mode {mode!r}; choose one of: {', '.join(DIALOGUE_MODES)}.")
    if mode == "auto":  # a local teacher is usually a small one; an HTTP teacher usually a large one
        return "whole" if teacher.http else "turns"
    return mode


class ExperiencesStep(Step):
    name = "experiences"
    version = prompts.VERSIONS["experiences"]

    def __init__(self, target: Target, dialogue: str = "auto"):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.dialogue = dialogue

    def items(self) -> list[Item]:
        name = self.character.name
        return [Item(stable_id(self.name, self.version, name, s["id"], s["location"], s["background"]), s)
                for s in _scenes(self.target)]

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        assert teacher is not None
        name, scene = self.character.name, item.data
        source = f"{scene['location']} {scene['background']}"

        def build(prime: str | None = None) -> list[Message]:
            return prompts.experience(name, scene["location"], scene["background"], self.lang, prime)

        if _mode(self.dialogue, teacher) == "turns":
            turns, dropped = dialogue_turns(teacher, build, name, item.id, source, self.lang)
        else:
            turns, dropped = teacher.ask(build(), lambda t: parse_dialogue(t, name, source), key=item.id,
                                         max_new_tokens=240)
        out = Outcome(rows=[{"id": stable_id("experience", name, scene["id"]), "character": name,
                             **_scene_fields(scene), "turns": turns}])
        out.rejected.update(f"turn: {r}" for r in dropped)
        return out


_YEAR = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)")


def is_historical(passages: list[str]) -> bool:
    """A profile whose latest year is before 1950 (crude, but it only picks which baits to use)."""
    years = [int(y) for p in passages for y in _YEAR.findall(p)]
    return bool(years) and max(years) < 1950


def mentions_bait(text: str, topic: str) -> bool:
    """Whether `text` brings up the bait (one of its distinctive words)."""
    words = {w for w in re.findall(r"\w+", topic.lower()) if len(w) > 3 and w not in {"your", "that", "with"}}
    if is_chinese(topic):
        words = {topic[i : i + 2] for i in range(len(topic) - 1)} - {"你的"}
    return any(w in text.lower() for w in words)


class ProtectiveStep(Step):
    name = "protective"
    version = prompts.VERSIONS["protective"]

    def __init__(self, target: Target, per_scene: int = 1, dialogue: str = "auto"):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.per_scene = per_scene
        self.dialogue = dialogue
        kinds = ["invented", "relation"] + (["modern"] if is_historical(self.character.passages) else [])
        self.baits = [(k, t) for k in kinds for t in prompts.BAITS[self.lang][k]]

    def items(self) -> list[Item]:
        name, out = self.character.name, []
        for s in _scenes(self.target):
            for k in range(self.per_scene):
                kind, topic = self.baits[int(stable_id("bait", name, s["id"], k), 16) % len(self.baits)]
                data = {"scene": s, "kind": kind, "topic": topic}
                out.append(Item(stable_id(self.name, self.version, name, s["id"], s["background"], k, topic), data))
        return out

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        assert teacher is not None
        name, scene, topic = self.character.name, item.data["scene"], item.data["topic"]
        source = f"{scene['location']} {scene['background']} {topic}"

        def build(prime: str | None = None) -> list[Message]:
            return prompts.protective(name, scene["location"], scene["background"], topic, self.lang, prime)

        def bait_asked(text: str) -> None:
            if not mentions_bait(text, topic):
                raise ParseError("bait missing")

        def parse(text: str) -> tuple[list[dict[str, str]], list[str]]:
            turns, dropped = parse_dialogue(text, name, source)
            bait_asked(" ".join(t["content"] for t in turns if t["speaker"] != name))
            return turns, dropped

        if _mode(self.dialogue, teacher) == "turns":
            turns, dropped = dialogue_turns(teacher, build, name, item.id, source, self.lang, bait_asked)
        else:
            turns, dropped = teacher.ask(build(), parse, key=item.id, max_new_tokens=240)
        row = {"id": stable_id("protective", name, scene["id"], topic), "character": name, **_scene_fields(scene),
               "bait": {"kind": item.data["kind"], "topic": topic}, "turns": turns}
        out = Outcome(rows=[row])
        out.rejected.update(f"turn: {r}" for r in dropped)
        return out


# ---------------------------------------------------------------------------------------------
# SFT rows


def to_messages(row: dict[str, Any], name: str, lang: str = "en") -> list[dict[str, str]] | None:
    """A dialogue row as chat messages (see the module docstring); None when it has no exchange."""
    messages = [{"role": "system", "content": prompts.meta_prompt(name, row["location"], row["background"], lang)}]
    for turn in row["turns"]:
        mine = turn["speaker"] == name
        role = "assistant" if mine else "user"
        if mine:
            line = f"({turn['action']}) {turn['content']}" if turn["action"] == "thinking" else turn["content"]
        else:
            line = f"{turn['speaker']}: {turn['content']}"
        if messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + line
        else:
            messages.append({"role": role, "content": line})
    if len(messages) > 1 and messages[1]["role"] == "assistant":  # the character opens the scene
        messages.insert(1, {"role": "user", "content": f"({row['background']})"})
    while messages[-1]["role"] == "user":
        messages.pop()
    return messages if len(messages) >= 3 else None


class SftStep(Step):
    name = "sft"
    version = prompts.VERSIONS["sft"]
    uses_teacher = False

    def __init__(self, target: Target, sources: tuple[str, ...] = ("experiences", "protective")):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.sources = sources

    def items(self) -> list[Item]:
        out = []
        for source in self.sources:
            for row in self.target.rows(source):
                if isinstance(row.get("turns"), list) and "id" in row:
                    out.append(Item(stable_id(self.name, self.version, row), {"kind": source, "row": row}))
        return out

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        row = item.data["row"]
        messages = to_messages(row, self.character.name, self.lang)
        if messages is None:
            return Outcome(rejected=Counter({"no exchange": 1}))
        return Outcome(rows=[{"id": stable_id("sft", row["id"]), "kind": item.data["kind"], "messages": messages}])
