"""Step 2: user queries, several short messages per statement that need it to be answered.

Rows: `{"id", "character", "statement", "query"}` in `datasets/queries.jsonl`.

Rules (reason counted when a line fails): "copies example" (a query from the prompt's worked
example); "too short"/"too long" (2-40 words, Chinese 3-80
characters); "copies statement" (the query repeats the statement, a small teacher's favourite
move); "not addressed" (neither a question nor spoken to the character: no "you"/"your"/the name,
你/您); "duplicate".
"""

from __future__ import annotations

import re

from . import prompts
from .common import Target, language
from .jobs import Item, Outcome, Step, Teacher
from .parse import copies, is_chinese, mentions, normalize, overlap, stable_id, string_list, text_length

_ADDRESS = re.compile(r"\b(?:you|your|yours|yourself)\b|[你您]", re.IGNORECASE)


def check_query(text: str, name: str, statement: str) -> str | None:
    zh = is_chinese(text)
    lang = "zh" if zh else "en"
    if copies(text, prompts.example_texts(lang)) or prompts.leaks_example(text, f"{name} {statement}", lang):
        return "copies example"
    size = text_length(text)
    if size < (3 if zh else 2):
        return "too short"
    if size > (80 if zh else 40):
        return "too long"
    norm, stmt = normalize(text), normalize(statement)
    if norm == stmt or stmt in norm or (overlap(text, statement) > 0.9 and not text.rstrip().endswith(("?", "？"))):
        return "copies statement"
    if not (text.rstrip().endswith(("?", "？")) or _ADDRESS.search(text) or mentions(text, name)):
        return "not addressed"
    return None


class QueriesStep(Step):
    name = "queries"
    version = prompts.VERSIONS["queries"]

    def __init__(self, target: Target, per_statement: int = 3):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.per_statement = per_statement

    def items(self) -> list[Item]:
        name, n = self.character.name, self.per_statement
        texts = dict.fromkeys(self.character.statement_texts)
        return [Item(stable_id(self.name, self.version, name, n, s), s) for s in texts]

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        assert teacher is not None
        name, statement = self.character.name, item.data
        messages = prompts.queries(name, statement, self.per_statement, self.lang)
        lines, cut = teacher.ask(messages, string_list, key=item.id, max_new_tokens=24 * self.per_statement + 16)
        out = Outcome()
        if cut:
            out.notes["reply cut off"] += 1
        for line in lines:
            if len(out.rows) >= self.per_statement:
                out.rejected["over count"] += 1
                continue
            reason = check_query(line, name, statement)
            rid = stable_id("query", name, statement, normalize(line))
            if reason is None and any(r["id"] == rid for r in out.rows):
                reason = "duplicate"
            if reason:
                out.rejected[reason] += 1
                continue
            out.rows.append({"id": rid, "character": name, "statement": statement, "query": line})
        return out
