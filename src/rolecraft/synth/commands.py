"""`rolecraft extract` and `rolecraft synth ...`: thin commands over `rolecraft.synth`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..console import err, friendly, out
from ..errors import RolecraftError

synth_app = typer.Typer(
    help="Make training data with a teacher LLM: statements, queries, relevance/NLI rows, scenes, "
    "experiences, protective scenes, SFT rows. Every step resumes where it stopped.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


CharacterArg = Annotated[str, typer.Argument(help="Workspace name, bundled example id, or a profile file to import")]
Backend = Annotated[str, typer.Option("--backend", "-b", help="Teacher backend: local | llamacpp | openai")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Teacher model: 'smollm2' (embedded), a folder, "
                                           "a .gguf file, or a served model id (openai)")]
BaseUrl = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible endpoint (openai backend; "
                                             "default $ROLECRAFT_OPENAI_BASE_URL)")]
Concurrency = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Items in flight: parallel requests "
                                          "(openai) or batch size (local)")]
Limit = Annotated[int | None, typer.Option("--limit", "-n", min=0, help="Run at most this many items per step")]
Tries = Annotated[int, typer.Option("--tries", min=1, help="Attempts per teacher call before an item is dropped")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Discard the step's rows and start over")]
RetryDropped = Annotated[bool, typer.Option("--retry-dropped", help="Run items that were dropped before again")]
Seed = Annotated[int, typer.Option(help="Seed for the teacher's sampling (reruns ask the same questions)")]
Temperature = Annotated[float, typer.Option(help="Teacher sampling temperature for generation")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the summaries as JSON")]
Home = Annotated[Path | None, typer.Option("--home", help="Workspace folder (default: $ROLECRAFT_HOME)")]
Dialogue = Annotated[str, typer.Option(help="whole: one call per dialogue (strong teachers); turns: one short turn "
                                       "per call (small teachers); auto: turns for local, whole for openai")]


def _teacher(backend: str, model: str | None, base_url: str | None, concurrency: int, tries: int, seed: int,
             temperature: float) -> Any:
    from ..llm import load_llm
    from .jobs import Teacher

    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"base_url": base_url, "concurrency": concurrency} if backend == "openai" else {}
    llm = load_llm(backend, model, **kwargs)
    err.print(f"[dim]Teacher {backend}:{llm.name} (loaded in {time.perf_counter() - t0:.1f}s)[/]")
    return Teacher(llm, concurrency=concurrency, tries=tries, seed=seed, temperature=temperature)


def _run(character: str, steps: list[str], home: Path | None, backend: str, model: str | None,
         base_url: str | None, concurrency: int, limit: int | None, tries: int, fresh: bool, retry_dropped: bool,
         seed: int, temperature: float, progress: bool, as_json: bool, **options: Any) -> None:
    from .pipeline import STEP_CLASSES, synthesize, target_for

    target, imported = target_for(character, home)
    if imported:
        err.print(f"[dim]Imported {character} into the workspace as '{target.slug}'.[/]")
    needs_teacher = any(STEP_CLASSES[s].uses_teacher for s in steps)
    teacher = _teacher(backend, model, base_url, concurrency, tries, seed, temperature) if needs_teacher else None
    try:
        summaries = synthesize(target, steps, teacher, limit=limit, fresh=fresh, retry_dropped=retry_dropped,
                               progress=progress, **options)
    finally:
        if teacher is not None:
            teacher.close()
    if as_json:
        out.print_json(json.dumps([s.to_dict() for s in summaries], ensure_ascii=False))
        return
    for s in summaries:
        for line in s.lines():
            out.print(line, highlight=False, markup=False, soft_wrap=True)


@synth_app.command("statements")
@friendly
def statements_cmd(
    character: CharacterArg,
    chunk_chars: Annotated[int, typer.Option(help="Longest passage piece sent at once, in characters")] = 500,
    min_overlap: Annotated[float, typer.Option(help="Share of a statement's words that must be in its passage")] = 0.7,
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.5, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Extract persona statements from the profile with a teacher LLM; they become the character's statements."""
    _run(character, ["statements"], home, backend, model, base_url, concurrency, limit, tries, fresh, retry_dropped,
         seed, temperature, progress, as_json, chunk_chars=chunk_chars, min_overlap=min_overlap)


extract = statements_cmd


@synth_app.command("queries")
@friendly
def queries_cmd(
    character: CharacterArg,
    per_statement: Annotated[int, typer.Option(min=1, help="Queries asked for per statement")] = 3,
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Write user queries that need each statement to be answered."""
    _run(character, ["queries"], home, backend, model, base_url, concurrency, limit, tries, fresh, retry_dropped,
         seed, temperature, progress, as_json, per_statement=per_statement)


@synth_app.command("relevance")
@friendly
def relevance_cmd(
    character: CharacterArg,
    pairs_per_statement: Annotated[int, typer.Option(help="Other statements' queries labelled per statement")] = 2,
    max_pairs: Annotated[int, typer.Option(help="Most teacher-labelled pairs in all")] = 200,
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Relevance rows for the discriminator: own queries relevant, others labelled by the teacher."""
    _run(character, ["relevance"], home, backend, model, base_url, concurrency, limit, tries, fresh, retry_dropped,
         seed, temperature, progress, as_json, pairs_per_statement=pairs_per_statement, max_pairs=max_pairs)


@synth_app.command("nli")
@friendly
def nli_cmd(
    character: CharacterArg,
    queries_per_statement: Annotated[int, typer.Option(help="Queries per statement to write replies for")] = 1,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Second pass: the teacher relabels each reply")]
    = True,
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """NLI rows: entailed, neutral and contradicting replies, relabelled in a second pass."""
    _run(character, ["nli"], home, backend, model, base_url, concurrency, limit, tries, fresh, retry_dropped,
         seed, temperature, progress, as_json, queries_per_statement=queries_per_statement, check=check)


@synth_app.command("scenes")
@friendly
def scenes_cmd(
    character: CharacterArg,
    per_chunk: Annotated[int, typer.Option(min=1, help="Scenes per passage piece")] = 1,
    chunk_chars: Annotated[int, typer.Option(help="Longest passage piece sent at once, in characters")] = 800,
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Character-LLM scenes (type, location, background) from the profile."""
    _run(character, ["scenes"], home, backend, model, base_url, concurrency, limit, tries, fresh, retry_dropped,
         seed, temperature, progress, as_json, per_chunk=per_chunk, scene_chunk_chars=chunk_chars)


@synth_app.command("experiences")
@friendly
def experiences_cmd(
    character: CharacterArg,
    dialogue: Dialogue = "auto",
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Experience dialogues for each scene (speakers, thinking/speaking turns)."""
    _run(character, ["experiences"], home, backend, model, base_url, concurrency, limit, tries, fresh,
         retry_dropped, seed, temperature, progress, as_json, dialogue=dialogue)


@synth_app.command("protective")
@friendly
def protective_cmd(
    character: CharacterArg,
    per_scene: Annotated[int, typer.Option(min=1, help="Protective dialogues per scene")] = 1,
    dialogue: Dialogue = "auto",
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Protective scenes: someone asks about what the character cannot know; it stays in its world."""
    _run(character, ["protective"], home, backend, model, base_url, concurrency, limit, tries, fresh,
         retry_dropped, seed, temperature, progress, as_json, per_scene=per_scene, dialogue=dialogue)


@synth_app.command("sft")
@friendly
def sft_cmd(
    character: CharacterArg, fresh: Fresh = False, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Convert experiences and protective scenes to SFT chat rows (no teacher needed)."""
    _run(character, ["sft"], home, "local", None, None, 1, None, 1, fresh, False, 0, 0.0, progress, as_json)


@synth_app.command("all")
@friendly
def all_cmd(
    character: CharacterArg,
    steps: Annotated[str, typer.Option(help="Comma-separated steps to run, in order")]
    = "statements,queries,relevance,nli,scenes,experiences,protective,sft",
    dialogue: Dialogue = "auto",
    backend: Backend = "local", model: Model = None, base_url: BaseUrl = None, concurrency: Concurrency = 4,
    limit: Limit = None, tries: Tries = 3, fresh: Fresh = False, retry_dropped: RetryDropped = False,
    seed: Seed = 0, temperature: Temperature = 0.7, progress: Progress = True, as_json: JsonOut = False,
    home: Home = None,
) -> None:
    """Run the whole chain with one teacher (defaults of each step; --limit applies per step)."""
    from .pipeline import STEPS

    chosen = [s.strip() for s in steps.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown:
        raise RolecraftError(f"Unknown step(s) {', '.join(unknown)}; choose from: {', '.join(STEPS)}.")
    _run(character, chosen, home, backend, model, base_url, concurrency, limit, tries, fresh, retry_dropped,
         seed, temperature, progress, as_json, dialogue=dialogue)


@synth_app.command("status")
@friendly
def status_cmd(character: CharacterArg, as_json: JsonOut = False, home: Home = None) -> None:
    """Show each step's items done and left, rows on file, and rows made from outdated inputs."""
    from .pipeline import step_status, target_for

    target, _ = target_for(character, home)
    rows = step_status(target)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("step", "items", "done", "rows", "stale items", "teacher", "note")
    for r in rows:
        table.add_row(r["step"], str(r.get("items", "")), str(r.get("done", "")), str(r.get("rows", "")),
                      str(r.get("stale_items", "")), str(r.get("teacher") or ""), r.get("note", ""))
    out.print(table)
