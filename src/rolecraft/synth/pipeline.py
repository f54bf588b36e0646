"""The steps by name, run one by one or as a chain, and their status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from ..workspace import Workspace
from .common import Target
from .experience import ExperiencesStep, ProtectiveStep, ScenesStep, SftStep
from .jobs import Step, Summary, Teacher, read_jsonl, read_manifest, run_step
from .labels import NliStep, RelevanceStep
from .queries import QueriesStep
from .statements import StatementsStep

STEP_CLASSES: dict[str, type[Step]] = {
    "statements": StatementsStep,
    "queries": QueriesStep,
    "relevance": RelevanceStep,
    "nli": NliStep,
    "scenes": ScenesStep,
    "experiences": ExperiencesStep,
    "protective": ProtectiveStep,
    "sft": SftStep,
}
STEPS = tuple(STEP_CLASSES)

# The options each step takes (anything else passed to `synthesize` is ignored by that step).
STEP_OPTIONS = {
    "statements": ("chunk_chars", "min_overlap"),
    "queries": ("per_statement",),
    "relevance": ("pairs_per_statement", "max_pairs"),
    "nli": ("queries_per_statement", "check"),
    "scenes": ("per_chunk", "scene_chunk_chars"),
    "experiences": ("dialogue",),
    "protective": ("per_scene", "dialogue"),
    "sft": (),
}


def make_step(name: str, target: Target, **options: Any) -> Step:
    if name not in STEP_CLASSES:
        raise RolecraftError(f"Unknown synthesis step {name!r}; choose from: {', '.join(STEPS)}.")
    kwargs = {k: v for k, v in options.items() if k in STEP_OPTIONS[name] and v is not None}
    if "scene_chunk_chars" in kwargs:
        kwargs["chunk_chars"] = kwargs.pop("scene_chunk_chars")
    return STEP_CLASSES[name](target, **kwargs)  # type: ignore[call-arg]


def synthesize(
    target: Target,
    steps: list[str] | tuple[str, ...],
    teacher: Teacher | None,
    limit: int | None = None,
    fresh: bool = False,
    retry_dropped: bool = False,
    progress: bool = True,
    **options: Any,
) -> list[Summary]:
    """Run `steps` in order for one character; `limit` caps the items each step runs this time."""
    summaries = []
    for name in steps:
        step = make_step(name, target, **options)
        if step.uses_teacher and teacher is None:
            raise RolecraftError(f"The {name} step needs a teacher LLM.")
        summaries.append(run_step(step, target.folder, teacher if step.uses_teacher else None, limit=limit,
                                  fresh=fresh, retry_dropped=retry_dropped, progress=progress))
    return summaries


def step_status(target: Target, **options: Any) -> list[dict[str, Any]]:
    """Per step: items its current inputs make, how many are done, rows on file, stale rows."""
    manifest = read_manifest(target.folder)["steps"]
    out = []
    for name in STEPS:
        entry: dict[str, Any] = {"step": name}
        try:
            step = make_step(name, target, **options)
            items = {i.id for i in step.items()}
        except RolecraftError as exc:
            out.append({**entry, "note": str(exc)})
            continue
        folder = Path(target.folder) / "datasets"
        journal = read_jsonl(folder / "journal" / f"{name}.jsonl")[0]
        done = {e.get("item") for e in journal} & items
        stale = {e.get("item") for e in journal} - items
        rows = read_jsonl(folder / f"{name}.jsonl")[0]
        entry.update(items=len(items), done=len(done), rows=len(rows), stale_items=len(stale),
                     teacher=manifest.get(name, {}).get("teacher"), updated=manifest.get(name, {}).get("updated"))
        out.append(entry)
    return out


def target_for(ref: str | Path, home: str | Path | None = None) -> tuple[Target, bool]:
    """The workspace character `ref` names; a file or bundled example is imported first.

    Returns the target and whether it was imported now. A file whose character is already in the
    workspace uses the workspace copy (re-import it with `rolecraft import --overwrite` to replace it;
    the changed inputs then invalidate the stale rows).
    """
    ws = Workspace(home)
    text = str(ref)
    if text.strip() and ws.exists(text) and not Path(text).expanduser().is_file():
        return Target(ws, ws.path(text).name), False
    character = ws.resolve(ref)
    if ws.exists(character.slug):
        return Target(ws, character.slug), False
    return Target(ws, ws.add(character)), True
