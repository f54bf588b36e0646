"""What every step needs: the character's folder, its language, and its upstream rows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..character import Character, split_sentences
from ..workspace import Workspace
from .jobs import datasets_dir, read_jsonl


@dataclass
class Target:
    """A workspace character the steps read and write."""

    workspace: Workspace
    slug: str

    @property
    def folder(self) -> Path:
        return self.workspace.path(self.slug)

    def character(self) -> Character:
        return self.workspace.get(self.slug)

    def rows(self, step: str) -> list[dict[str, Any]]:
        """The rows a step has on file (a torn last line is ignored)."""
        return read_jsonl(datasets_dir(self.folder) / f"{step}.jsonl")[0]


_CJK_END = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]$")


def language(character: Character) -> str:
    return "zh" if character.language == "zh" else "en"


def chunks(passages: list[str], max_chars: int) -> Iterator[tuple[int, str]]:
    """(passage index, text) pieces of at most about `max_chars`, split between sentences.

    A small teacher copes with a few sentences at a time; a long profile (80+ passages) becomes a
    long list of short items, each its own resumable unit.
    """
    for index, passage in enumerate(passages):
        piece = ""
        for sentence in split_sentences(passage):
            if piece and len(piece) + len(sentence) + 1 > max_chars:
                yield index, piece
                piece = ""
            sep = "\n" if "\n" in passage else "" if _CJK_END.search(piece) else " "
            piece = f"{piece}{sep}{sentence}" if piece else sentence
        if piece.strip():
            yield index, piece.strip()
