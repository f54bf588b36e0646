"""Step 1: persona statements from profile passages (`rolecraft extract`).

Rows: `{"id", "character", "statement", "passage", "chunk"}` in `datasets/statements.jsonl`; the id
is fixed by the normalized statement, so the same fact found twice is kept once. After every run the
character's statements become the extracted ones (source "extracted"; lorebook entries stay).

The rules a statement must pass (reason counted when it fails):
  "no name"        it names the character (the name or a distinctive part of it)
  "pronoun"        it does not start with an unresolved pronoun (He/She/They/It/This.., 他/她/它..)
  "first person"   it is not written as the character speaking (I/My.., 我)
  "question"       it is a statement, not a question
  "too short"/"too long"   3-60 words (Chinese: 4-120 characters)
  "copies example" it has words of the prompt's worked example that its passage does not have
  "ungrounded"     at least 70% of its content words occur in the passage it came from (a small
                   teacher invents facts; this keeps mostly what the profile says)
  "duplicate"      not the same, after normalization, as a statement already kept
  "near duplicate" not 75% the same content words as a statement already kept
"""

from __future__ import annotations

import re
from typing import Any

from ..character import Statement
from ..errors import RolecraftError
from . import prompts
from .common import Target, chunks, language
from .jobs import Item, Outcome, Step, Teacher
from .parse import (
    FIRST_PERSON_START,
    PRONOUN_START,
    is_chinese,
    mentions,
    normalize,
    overlap,
    similarity,
    stable_id,
    string_list,
    text_length,
)


def check_statement(text: str, name: str, source: str, min_overlap: float = 0.7) -> str | None:
    """The reason `text` is not a usable statement about `name` taken from `source`, or None."""
    zh = is_chinese(text)
    size = text_length(text)
    if size < (4 if zh else 3):
        return "too short"
    if size > (120 if zh else 60):
        return "too long"
    if text.rstrip().endswith(("?", "？")):
        return "question"
    if FIRST_PERSON_START.match(text):
        return "first person"
    if PRONOUN_START.match(text):
        return "pronoun"
    if not mentions(text, name):
        return "no name"
    if prompts.leaks_example(text, source, "zh" if zh else "en"):
        return "copies example"
    if overlap(text, source, ignore=name) < min_overlap:
        return "ungrounded"
    return None


_FIELD_LABEL = re.compile(r"^(?:[A-Z][\w'’-]*(?: [\w'’-]+){0,3}|[\u4e00-\u9fff]{1,6})\s*[:：]\s*")


def strip_field_label(text: str, name: str) -> str:
    """'Skills: Eve is an expert…' -> 'Eve is an expert…' (profiles are often 'Field: value' lines)."""
    m = _FIELD_LABEL.match(text)
    if m and mentions(text[m.end() :], name):
        return text[m.end() :]
    return text


def statement_id(name: str, text: str) -> str:
    return stable_id("statement", name, normalize(text))


class StatementsStep(Step):
    name = "statements"
    version = prompts.VERSIONS["statements"]

    def __init__(self, target: Target, chunk_chars: int = 500, min_overlap: float = 0.7,
                 near_duplicate: float = 0.75, update_character: bool = True):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.chunk_chars = chunk_chars
        self.min_overlap = min_overlap
        self.update_character = update_character
        self.near_duplicate = near_duplicate
        self.kept: list[str] = []
        if not self.character.passages:
            raise RolecraftError(f"{self.character.name} has no profile passages to extract statements from; "
                                 "import a wiki text or a card with a description first.")

    def items(self) -> list[Item]:
        name = self.character.name
        out = []
        for index, text in chunks(self.character.passages, self.chunk_chars):
            out.append(Item(stable_id(self.name, self.version, name, text), {"passage": index, "text": text}))
        return list({i.id: i for i in out}.values())  # a repeated paragraph is one item

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        assert teacher is not None
        name, text = self.character.name, item.data["text"]
        lines, cut = teacher.ask(prompts.statements(name, text, self.lang), string_list, key=item.id,
                                 max_new_tokens=40 + len(text) // 3)
        out = Outcome()
        if cut:
            out.notes["reply cut off"] += 1
        kept: set[str] = set()
        for line in lines:
            line = strip_field_label(line, name)
            reason = check_statement(line, name, text, self.min_overlap)
            rid = statement_id(name, line)
            if reason is None and rid in kept:
                reason = "duplicate"
            if reason:
                out.rejected[reason] += 1
                continue
            kept.add(rid)
            out.rows.append({"id": rid, "character": name, "statement": line,
                             "passage": item.data["passage"], "chunk": item.id})
        return out

    def start(self, rows: list[dict[str, Any]]) -> None:
        self.kept = [r["statement"] for r in rows]

    def accept(self, row: dict[str, Any]) -> str | None:
        if any(similarity(row["statement"], k) >= self.near_duplicate for k in self.kept):
            return "near duplicate"
        self.kept.append(row["statement"])
        return None

    def finish(self, rows: list[dict[str, Any]]) -> None:
        if self.update_character and rows:
            apply_statements(self.target, [r["statement"] for r in rows])


def apply_statements(target: Target, texts: list[str]) -> None:
    """Make `texts` the character's statements (source "extracted"), keeping its lorebook entries."""
    character = target.character()  # re-read: never write back a stale copy
    lore = character.lorebook
    new = [Statement(t, source="extracted") for t in dict.fromkeys(texts)]
    if [(s.text, s.source) for s in character.statements] == [(s.text, s.source) for s in new + lore]:
        return
    character.statements = new + lore
    target.workspace.add(character, overwrite=True)

