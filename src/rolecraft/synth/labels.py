"""Steps 3 and 4: relevance rows and NLI rows, in the JSONL format the discriminator trainer reads
(`rolecraft.train.discriminators.read_examples`), so they train without conversion.

Relevance (`datasets/relevance.jsonl`):
    {"id", "character", "statement", "query", "label": "relevant" | "irrelevant", "origin"}
A statement's own queries are "relevant" by construction (origin "own"); a bounded, deterministic
sample of other statements' queries is labelled by the teacher (origin "teacher"), since some of
them do need the statement too.

NLI (`datasets/nli.jsonl`):
    {"id", "character", "statement", "query", "response", "label": "entailed" | "neutral" | "contradicted"}
For each (statement, query) the teacher writes one reply per label (replies about the character in
the third person, copies of the prompt's example or of the input are left out); a second pass shows the teacher
each reply alone and asks for its label, as the APC paper does. `label` is always the label the
reply was *written* for. When the second pass disagrees, the row also gets
`"labels": [written_for, second_pass]` (the trainer uses `label`; a stricter trainer can drop rows
with `labels`). When the second pass gives no usable answer, the row gets `"checked": false`.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from typing import Any

from . import prompts
from .common import Target, language
from .jobs import Dropped, Item, Outcome, Step, Teacher
from .parse import (
    ParseError,
    copies,
    first_json,
    is_chinese,
    label_of,
    name_parts,
    normalize,
    stable_id,
    text_length,
)


def queries_by_statement(target: Target) -> dict[str, list[str]]:
    """The query rows on file, grouped by statement (statements in file order)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for row in target.rows("queries"):
        if isinstance(row.get("statement"), str) and isinstance(row.get("query"), str):
            grouped[row["statement"]].append(row["query"])
    return dict(grouped)


def relevance_row(name: str, statement: str, query: str, label: str, origin: str) -> dict[str, Any]:
    return {"id": stable_id("relevance", name, statement, query), "character": name, "statement": statement,
            "query": query, "label": label, "origin": origin}


class RelevanceStep(Step):
    name = "relevance"
    version = prompts.VERSIONS["relevance"]

    def __init__(self, target: Target, pairs_per_statement: int = 2, max_pairs: int = 200):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.pairs_per_statement = pairs_per_statement
        self.max_pairs = max_pairs

    def items(self) -> list[Item]:
        """Per statement: its own queries (one item, no teacher), then its sampled pairs (one item each),
        so `--limit` runs some of both; teacher pairs stop at `max_pairs`."""
        name, v = self.character.name, self.version
        grouped = queries_by_statement(self.target)
        items, pairs = [], 0
        for s, qs in grouped.items():
            items.append(Item(stable_id(self.name, v, name, "own", s, qs), {"statement": s, "queries": qs}))
            others = sorted({q for s2, qs2 in grouped.items() if s2 != s for q in qs2} - set(qs))
            rng = random.Random(stable_id("sample", name, s))
            for q in rng.sample(others, min(self.pairs_per_statement, len(others), self.max_pairs - pairs)):
                items.append(Item(stable_id(self.name, v, name, "pair", s, q), {"statement": s, "query": q}))
                pairs += 1
        return items

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        name, s = self.character.name, item.data["statement"]
        if "queries" in item.data:
            return Outcome(rows=[relevance_row(name, s, q, "relevant", "own") for q in item.data["queries"]])
        assert teacher is not None
        q = item.data["query"]
        label = teacher.ask(prompts.relevance(name, s, q, self.lang),
                            lambda t: label_of(t, prompts.RELEVANCE_LABELS), key=item.id,
                            max_new_tokens=8, temperature=0.0)
        out = Outcome(rows=[relevance_row(name, s, q, label, "teacher")])
        out.notes[f"teacher said {label}"] += 1
        return out

    def warnings(self, rows: list[dict[str, Any]]) -> list[str]:
        labels = Counter(r["label"] for r in rows if r.get("origin") == "teacher")
        total = sum(labels.values())
        if total >= 10 and labels.most_common(1)[0][1] >= 0.9 * total:
            label, n = labels.most_common(1)[0]
            return [f"the teacher called {n} of {total} pairs '{label}': it may not be judging at all; "
                    "use a stronger teacher or train on the own-query rows only"]
        return []


def nli_replies(text: str) -> dict[str, str]:
    """The `{"entailed", "neutral", "contradicted"}` object of replies, validated."""
    value = first_json(text, dict)
    replies = {}
    for label in prompts.NLI_LABELS:
        reply = value.get(label)
        if not isinstance(reply, str) or not reply.strip():
            raise ParseError("missing reply")
        reply = " ".join(reply.split())
        size = text_length(reply)
        if size > (120 if is_chinese(reply) else 60):
            raise ParseError("too long")
        if size < 2:
            raise ParseError("too short")
        replies[label] = reply
    if len({normalize(r) for r in replies.values()}) < 3:
        raise ParseError("same replies")
    if all(copies(r, prompts.example_texts("zh" if is_chinese(r) else "en")) for r in replies.values()):
        raise ParseError("copies example")
    return replies


_THIRD_PERSON = re.compile(r"^(?:he|she|his|her)\b|^(?:他|她)", re.IGNORECASE)


def third_person(reply: str, name: str) -> bool:
    """A reply about the character ("Eve has…", "She…") rather than by it."""
    return bool(_THIRD_PERSON.match(reply)) or any(
        reply.startswith(p) and not reply[len(p) :].lstrip().startswith(",") for p in name_parts(name)
    )


class NliStep(Step):
    name = "nli"
    version = prompts.VERSIONS["nli"]

    def __init__(self, target: Target, queries_per_statement: int = 1, check: bool = True):
        self.target = target
        self.character = target.character()
        self.lang = language(self.character)
        self.queries_per_statement = queries_per_statement
        self.check = check

    def items(self) -> list[Item]:
        name = self.character.name
        return [Item(stable_id(self.name, self.version, name, self.check, s, q), {"statement": s, "query": q})
                for s, qs in queries_by_statement(self.target).items() for q in qs[: self.queries_per_statement]]

    def work(self, item: Item, teacher: Teacher | None) -> Outcome:
        assert teacher is not None
        name, s, q = self.character.name, item.data["statement"], item.data["query"]
        replies = teacher.ask(prompts.nli_replies(name, s, q, self.lang), nli_replies, key=item.id,
                              max_new_tokens=160)
        out = Outcome()
        for intent, reply in replies.items():
            if normalize(reply) in (normalize(q), normalize(s)):
                out.rejected["copies input"] += 1
                continue
            if copies(reply, prompts.example_texts(self.lang)) or prompts.leaks_example(reply, f"{s} {q}", self.lang):
                out.rejected["copies example"] += 1
                continue
            if third_person(reply, name):
                out.rejected["third person"] += 1
                continue
            row: dict[str, Any] = {"id": stable_id("nli", name, s, q, intent), "character": name, "statement": s,
                                   "query": q, "response": reply, "label": intent}
            if self.check:
                try:
                    second = teacher.ask(prompts.nli_label(name, s, reply, self.lang),
                                         lambda t: label_of(t, prompts.NLI_LABELS), key=[item.id, intent],
                                         max_new_tokens=10, temperature=0.0)
                except Dropped as exc:
                    row["checked"] = False
                    out.notes[f"second pass failed: {exc.reason}"] += 1
                else:
                    out.notes["second pass agrees" if second == intent else "second pass disagrees"] += 1
                    if second != intent:
                        row["labels"] = [intent, second]
            out.rows.append(row)
        return out

    def warnings(self, rows: list[dict[str, Any]]) -> list[str]:
        checked = [r for r in rows if r.get("checked", True)]
        agreed = sum("labels" not in r for r in checked)
        if self.check and len(checked) >= 9 and agreed < 0.5 * len(checked):
            return [f"the second pass agreed with only {agreed} of {len(checked)} replies: the teacher cannot "
                    "tell its own replies apart, so these labels are noisy"]
        return []
