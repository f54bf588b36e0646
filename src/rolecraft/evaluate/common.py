"""What every eval needs: the character to evaluate (a file, a workspace name or a bundled example), its
held-out queries, its adapters, a short profile excerpt for judges, and generation in batches."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..character import Character
from ..errors import RolecraftError
from ..llm.base import LLM, Message
from . import prompts


@dataclass
class Target:
    character: Character
    folder: Path | None  # the character's workspace folder, when it has one (queries, adapters)

    @property
    def slug(self) -> str:
        return self.character.slug


def load_target(ref: str | Path, home: Path | None = None) -> Target:
    """A profile file is read as is (not imported: evaluating must not change the workspace)."""
    from ..character import load_character
    from ..workspace import Workspace

    ws = Workspace(home)
    path = Path(str(ref)).expanduser()
    c = load_character(path) if path.exists() else ws.resolve(str(ref))
    folder = ws.path(c.slug) if ws.exists(c.slug) else None
    if not c.statements:
        raise RolecraftError(f"'{c.name}' has no persona statements to evaluate against.")
    return Target(c, folder)


def read_query_file(path: Path) -> list[str]:
    """JSON list or JSON Lines; items are strings or objects with `query` or `question`."""
    path = Path(path)
    if not path.is_file():
        raise RolecraftError(f"Queries file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(ln) for ln in text.splitlines() if ln.strip()]
    except json.JSONDecodeError as exc:
        raise RolecraftError(f"{path}: not a JSON list or JSON Lines ({exc})") from None
    out = []
    for it in items:
        q = it if isinstance(it, str) else (it.get("query") or it.get("question")) if isinstance(it, dict) else None
        if isinstance(q, str) and q.strip():
            out.append(q.strip())
    if not out:
        raise RolecraftError(f"{path} holds no queries (strings, or objects with 'query' or 'question').")
    return list(dict.fromkeys(out))


def held_out_queries(target: Target, files: Sequence[Path] = ()) -> tuple[list[str], str]:
    """(queries, where they came from): the DPO held-out split, else the character's synthesised queries, else
    the given files, else the fixed generic persona questions."""
    if target.folder is not None:
        for name, label in (("dpo_heldout.jsonl", "the DPO held-out split"),
                            ("queries.jsonl", "the character's synthesised queries")):
            path = target.folder / "datasets" / name
            if path.is_file() and path.stat().st_size > 0:
                return read_query_file(path), label
    if files:
        return list(dict.fromkeys(q for f in files for q in read_query_file(f))), "the given queries file(s)"
    return list(prompts.GENERIC_QUERIES), "rolecraft's generic persona questions"


def find_adapter(target: Target, name: str = "dpo") -> Path | None:
    if target.folder is None:
        return None
    path = target.folder / "adapters" / name
    return path if (path / "adapter_config.json").is_file() else None


def profile_excerpt(c: Character, limit: int = 900) -> str:
    """The opening of the profile (or the first statements), cut at a sentence near `limit` characters."""
    text = "\n".join(c.passages) if c.passages else "\n".join(c.statement_texts)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(".\n"))
    return cut[: end + 1] if end > limit // 2 else cut + "…"


def generate(llm: LLM, prompts_: Sequence[list[Message]], sampling: dict[str, Any], batch_size: int,
             on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Replies to many prompts, `batch_size` at a time (the local backend pads and generates them together)."""
    out: list[str] = []
    for start in range(0, len(prompts_), batch_size):
        chunk = list(prompts_[start : start + batch_size])
        out += llm.chat_batch(chunk, **sampling)
        if on_batch:
            on_batch(len(chunk))
    return out


def limit_threads(threads: int | None) -> None:
    """Cap torch's CPU threads (evals often share a small machine with training)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
