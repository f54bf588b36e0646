"""Strict parsing of teacher output, and the text rules that guard against a weak teacher.

Every parser either returns a validated value or raises `ParseError(reason)`; the reason is a short
fixed phrase ("no list", "bad json", "empty", "wrong label", ...) that the job runner counts.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from typing import Any


class ParseError(Exception):
    """Teacher output that does not have the asked-for shape; `reason` is counted, not shown raw."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def stable_id(*parts: Any) -> str:
    """A short id fixed by its inputs (the same inputs give the same id on every run and machine)."""
    text = "\x1f".join(json.dumps(p, ensure_ascii=False, sort_keys=True) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_DECODER = json.JSONDecoder()
_MAX_STARTS = 8  # how many '[' / '{' positions to try before giving up on a reply


def first_json(text: str, kind: type[list] | type[dict]) -> Any:
    """The first JSON list or object in `text` (prose or code fences around it are ignored), which
    must be of type `kind`: an object where a list was asked for is "no list", and the reverse.

    Nothing is repaired: single quotes, trailing commas or a reply cut off mid-value are "bad json".
    """
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:_MAX_STARTS]
    for start in starts:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, kind):
            return value
        break
    else:
        if starts and (kind is list) == ("[" in text):
            raise ParseError("bad json")
    raise ParseError("no list" if kind is list else "no object")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def first_list(text: str) -> tuple[list[Any], bool]:
    """The first JSON list in `text`, and whether it was cut off.

    A list that the length limit cut off mid-item (`["a", "b", "c` with no closing bracket after the
    last complete item) gives its complete items and cut=True: the reply ran out of tokens, it did
    not break the format. Anything else that does not parse is "bad json".
    """
    try:
        return first_json(text, list), False
    except ParseError as exc:
        if exc.reason != "bad json":
            raise
    pos, items = text.index("[") + 1, []
    while True:
        pos = _skip_space(text, pos)
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        items.append(value)
        pos = _skip_space(text, pos)
        if text[pos : pos + 1] != ",":
            break
        pos += 1
    if items and "]" not in text[pos:]:
        return items, True
    raise ParseError("bad json")


def string_list(text: str) -> tuple[list[str], bool]:
    """A JSON list of non-empty strings (blanks skipped), and whether the list was cut off."""
    value, cut = first_list(text)
    if not all(isinstance(v, str) for v in value):
        raise ParseError("not strings")
    items = [v for v in (clean_line(v) for v in value) if v]
    if not items:
        raise ParseError("empty")
    return items, cut


def label_of(text: str, labels: Iterable[str], key: str = "label") -> str:
    """The label in a `{"label": ...}` reply; anything outside `labels` is "wrong label"."""
    value = first_json(text, dict)
    raw = value.get(key)
    if not isinstance(raw, str) or not raw.strip():
        raise ParseError("empty")
    label = raw.strip().lower().rstrip(".")
    if label not in set(labels):
        raise ParseError("wrong label")
    return label


# ---------------------------------------------------------------------------------------------
# Text rules

_BULLET = re.compile(r"^\s*(?:[-*•·]+|\d+[.)、]|[(（]\d+[)）])\s*")
_SPACE = re.compile(r"\s+")


def clean_line(text: str) -> str:
    """Strip list markers, wrapping quotes and extra whitespace from one generated line."""
    text = _SPACE.sub(" ", _BULLET.sub("", text.strip())).strip()
    if len(text) >= 2 and text[0] in "\"'“「" and text[-1] in "\"'”」":
        text = text[1:-1].strip()
    return text


def normalize(text: str) -> str:
    """The dedupe key: case, width, punctuation and spacing do not make two lines different."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", "", text)
    return _SPACE.sub(" ", text).strip()


def is_chinese(text: str) -> bool:
    return len(_CJK.findall(text)) > len(re.findall(r"[A-Za-z]", text))


def text_length(text: str) -> int:
    """Words for alphabetic text, characters for CJK text (a fair size measure for both)."""
    cjk = len(_CJK.findall(text))
    return cjk + len(re.findall(r"[A-Za-z0-9\u00c0-\u024f'’-]+", text))


_PARTICLES = {"van", "von", "de", "der", "den", "da", "di", "del", "la", "le", "du", "of", "the", "bin", "al"}


def name_parts(name: str) -> list[str]:
    """The name and its distinctive parts ("Ludwig van Beethoven" -> full, Ludwig, Beethoven)."""
    parts = [name.strip()]
    words = [w for w in re.split(r"[\s·・.]+", name.strip()) if w]
    if len(words) > 1:
        parts += [w for w in words if w.lower() not in _PARTICLES and len(w) > 1]
    return list(dict.fromkeys(parts))


def mentions(text: str, name: str) -> bool:
    """Whether `text` names the character (whole words for Latin names: 'Eve' is not in 'Every')."""
    for part in name_parts(name):
        if _CJK.search(part):
            if part in text:
                return True
        elif re.search(rf"(?<![\w]){re.escape(part)}(?![\w])", text, flags=re.IGNORECASE):
            return True
    return False


# Openings that leave the subject to context: a statement must stand alone.
PRONOUN_START = re.compile(
    r"^(?:he|she|they|it|his|her|hers|their|theirs|its|him|them|this|these|those|that)\b"
    r"|^(?:他们|她们|它们|他|她|它|其|该|此人|这位|那位)",
    re.IGNORECASE,
)
FIRST_PERSON_START = re.compile(r"^(?:i|i'm|i’m|my|we|our)\b|^(?:我|我们)", re.IGNORECASE)

_STOP = {
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is",
    "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did", "not", "no", "it",
    "its", "this", "that", "these", "those", "he", "she", "they", "his", "her", "their", "him", "them", "who",
    "whom", "which", "what", "when", "where", "why", "how", "very", "also", "often", "always", "can", "could",
    "would", "should", "will", "may", "might", "must", "than", "then", "so", "such", "into", "about", "over",
    "under", "after", "before", "during", "while", "because", "if", "whether", "s"
}  # fmt: skip


def content_words(text: str) -> set[str]:
    """Lower-cased content words (alphabetic text) or character bigrams (CJK text)."""
    if is_chinese(text):
        chars = [c for c in text if _CJK.match(c)]
        return {a + b for a, b in zip(chars, chars[1:], strict=False)}
    words = re.findall(r"[a-z0-9\u00c0-\u024f]+", text.lower())
    return {_stem(w) for w in words if w not in _STOP and len(w) > 1}


def _stem(word: str) -> str:
    """A crude suffix strip, enough to match 'identities'/'identity' and 'preserving'/'preserve'."""
    if len(word) > 4:
        for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)] + repl
                break
    return word[:-1] if len(word) > 4 and word.endswith("e") else word


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of content words (near-duplicate detection)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa or wb else 1.0


def overlap(text: str, source: str, ignore: str = "") -> float:
    """Share of `text`'s content words found in `source` (1.0 when it has none to check)."""
    words = content_words(text) - content_words(ignore)
    if not words:
        return 1.0
    return len(words & content_words(source)) / len(words)


def copies(text: str, examples: Iterable[str], threshold: float = 0.6) -> bool:
    """Whether `text` is (nearly) one of `examples` (the prompt's worked examples)."""
    norm = normalize(text)
    return any(norm == normalize(e) or similarity(text, e) >= threshold for e in examples)
