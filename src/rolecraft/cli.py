"""The `rolecraft` command line: thin commands over the library."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import RolecraftError

app = typer.Typer(
    help="Build role-play characters, chat with them, and measure how faithful they stay to their persona.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn a RolecraftError into one red line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RolecraftError as e:
            err.print(f"[bold red]Error:[/] {e}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


Backend = Annotated[str, typer.Option("--backend", "-b", help="local | llamacpp | openai")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="'smollm2' (embedded), a model folder, a .gguf file, or a served model id"),
]
EXPORT_FORMATS = "card-v2-png | card-v2-json | card-v3-json | card-v3-png | statements | rolecraft"
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Workspace folder (default: $ROLECRAFT_HOME)")]


def _workspace(home: Path | None):  # noqa: ANN202 - Workspace is imported lazily to keep --help fast
    from .workspace import Workspace

    return Workspace(home)


@app.command("import")
@friendly
def import_(
    file: Annotated[Path, typer.Argument(help="Wiki .txt, statements .json, Character Card V2/V3 .json or .png")],
    name: Annotated[str | None, typer.Option(help="Name to give the character (overrides the file's)")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a character of the same name")] = False,
    home: HomeOpt = None,
) -> None:
    """Import a character file into the workspace."""
    from .character import load_character

    character = load_character(file, name=name)
    slug = _workspace(home).add(character, overwrite=overwrite)
    out.print(f"Imported [bold]{character.name}[/] as '{slug}' with {len(character.statements)} statements.")


@app.command("export")
@friendly
def export(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id, or file")],
    format: Annotated[str, typer.Option("--format", "-f", help=EXPORT_FORMATS)] = "card-v2-json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output file")] = None,
    home: HomeOpt = None,
) -> None:
    """Export a character as a Character Card, a statements file, or rolecraft JSON."""
    from .character import export_character
    from .paths import slugify

    c = _workspace(home).resolve(character)
    suffix = ".png" if format.endswith("png") else ".json"
    target = output or Path(f"{slugify(c.name)}{'.statements' if format == 'statements' else ''}{suffix}")
    export_character(c, format, target)
    out.print(f"Wrote {target}")


@app.command("list")
@friendly
def list_(home: HomeOpt = None) -> None:
    """List the characters in the workspace and the bundled examples."""
    from .examples import list_examples

    ws = _workspace(home)
    table = Table("id", "name", "statements", "where")
    for slug in ws.list():
        c = ws.get(slug)
        table.add_row(slug, c.name, str(len(c.statements)), "workspace")
    for ex in list_examples():
        if not ws.exists(ex):
            from .examples import load_example

            c = load_example(ex)
            table.add_row(ex, c.name, str(len(c.statements)), "bundled example")
    out.print(table)


def _agent(character: str, backend: str, model: str | None, adapter: str | None, mode: str, top_k: int,
           style: str, home: Path | None, **sampling: Any):  # noqa: ANN202
    from .agent import AgentConfig, RolePlayAgent
    from .llm import load_llm

    if mode not in ("rag", "all", "none"):
        raise RolecraftError(f"--mode must be 'rag', 'all' or 'none', not {mode!r}")
    if style not in ("chat", "quote"):
        raise RolecraftError(f"--style must be 'chat' or 'quote', not {style!r}")
    c = _workspace(home).resolve(character)
    t0 = time.perf_counter()
    llm = load_llm(backend, model, adapter=adapter)
    load_s = time.perf_counter() - t0
    cfg = AgentConfig(mode=mode, top_k=top_k, style=style,  # type: ignore[arg-type]
                      **{k: v for k, v in sampling.items() if v is not None})
    return RolePlayAgent(c, llm, cfg), load_s


def _faithfulness(scorer: Any, agent: Any, message: str) -> None:
    """The APC view of the last reply: total over all statements, and the statements it contradicts."""
    c = agent.character
    report = scorer.report(c.statement_texts, message, [agent.last.reply], character=c.name)[0]
    out.print(f"  [bold]APC {report.total:.2f}[/] / {len(report.rows)} statements", highlight=False)
    for row in report.rows:
        if row.p_contradicted > 0.5:
            out.print(f"  [red]✗ contradicts: {row.statement}[/] ({row.p_contradicted:.2f})", highlight=False)


def _speak(agent: Any, message: str, show_statements: bool) -> None:
    name = agent.character.name
    out.print(f"[bold magenta]{name}:[/] ", end="")
    t0 = time.perf_counter()
    for piece in agent.stream(message):
        out.print(piece, end="", markup=False, highlight=False)
    out.print()
    result = agent.last
    if show_statements:
        for s in result.statements:
            out.print(f"  [dim]• {s}[/]", highlight=False)
    if result.summarized:
        out.print("  [dim](older turns were summarised to fit the context)[/]")
    err.print(f"[dim]{time.perf_counter() - t0:.1f}s[/]")


@app.command()
@friendly
def chat(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id (e.g. 'mira'), or file")],
    once: Annotated[str | None, typer.Option("--once", help="Send one message, print the reply, exit")] = None,
    backend: Backend = "local",
    model: ModelOpt = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter folder (local backend)")] = None,
    mode: Annotated[str, typer.Option(help="rag: top-k statements; all: every statement; none: name only")] = "rag",
    top_k: Annotated[int, typer.Option("--top-k", help="Statements retrieved per message in rag mode")] = 5,
    style: Annotated[str, typer.Option(help="chat: chat messages; quote: EGOS quoted speech")] = "chat",
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (0 = greedy)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Longest reply, in tokens")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible replies")] = None,
    show_statements: Annotated[bool, typer.Option(help="Print the statements each reply was given")] = False,
    home: HomeOpt = None,
) -> None:
    """Chat with a character. Commands inside the chat: /reset, /history, /quit."""
    agent, load_s = _agent(character, backend, model, adapter, mode, top_k, style, home,
                           temperature=temperature, max_new_tokens=max_tokens, seed=seed)
    err.print(f"[dim]{agent.character.name} on {backend}:{agent.llm.name} (loaded in {load_s:.1f}s)[/]")
    if once is not None:
        if not once.strip():
            raise RolecraftError("--once needs a non-empty message")
        _speak(agent, once, show_statements)
        return
    if agent.character.greeting:
        out.print(f"[bold magenta]{agent.character.name}:[/] {agent.character.greeting}", highlight=False)
    while True:
        try:
            line = input("You: ").strip()
        except (EOFError, KeyboardInterrupt):
            out.print()
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            agent.reset()
            out.print("[dim](conversation reset)[/]")
        elif line == "/history":
            if agent.memory.summary:
                out.print(f"[dim]Summary:[/] {agent.memory.summary}", highlight=False)
            for t in agent.memory.log:
                out.print(f"You: {t.user}\n{agent.character.name}: {t.reply}", highlight=False, markup=False)
        elif line.startswith("/"):
            out.print("[dim]Commands: /reset, /history, /quit[/]")
        else:
            _speak(agent, line, show_statements)


@app.command()
@friendly
def score(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id, or file")],
    query: Annotated[str, typer.Option("--query", "-q", help="The user's message")],
    response: Annotated[list[str], typer.Option("--response", "-r", help="A reply to score (repeatable)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON")] = False,
    home: HomeOpt = None,
) -> None:
    """Score replies by APC faithfulness against every persona statement of a character."""
    import json

    from .apc import APCScorer

    c = _workspace(home).resolve(character)
    if not query.strip() or not any(r.strip() for r in response):
        raise RolecraftError("--query and at least one non-empty --response are needed")
    reports = APCScorer.pretrained().report(c.statement_texts, query, response, character=c.name)
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=2))
        return
    for r in reports:
        table = Table("statement", "active", "P(rel)", "P(ent)", "P(con)", "contribution", title=r.response)
        for row in r.rows:
            colour = "red" if row.p_contradicted > 0.5 else "green" if row.p_entailed > 0.5 else ""
            table.add_row(f"[{colour}]{row.statement}[/]" if colour else row.statement,
                          "active" if row.active else "passive", f"{row.p_relevant:.2f}",
                          f"{row.p_entailed:.2f}", f"{row.p_contradicted:.2f}", f"{row.contribution:.2f}")
        out.print(table)
        out.print(f"APC total [bold]{r.total:.2f}[/] over {len(r.rows)} statements (mean {r.mean:.3f})")


train_app = typer.Typer(help="Train discriminators and role-play models.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("discriminators")
@friendly
def train_discriminators(
    task: Annotated[str | None, typer.Option(help="relevance | nli (not needed with --reproduce)")] = None,
    train_file: Annotated[list[Path] | None, typer.Option("--train", help="JSONL file(s) to train on")] = None,
    dev_file: Annotated[Path | None, typer.Option("--dev", help="JSONL dev file (default: a split)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for the trained model")] = None,
    init_from: Annotated[str | None, typer.Option(help="'shipped' or a model folder to start from")] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the training rows")] = 1.0,
    max_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes")] = None,
    reproduce: Annotated[bool, typer.Option(help="Retrain the shipped models from ../shared/data")] = False,
    install: Annotated[bool, typer.Option(help="With --reproduce: replace the shipped models")] = False,
) -> None:
    """Train a relevance or NLI discriminator from JSONL rows, or reproduce the shipped ones."""
    from .train.discriminators import TrainConfig, reproduce_shipped, train

    if reproduce:
        results = reproduce_shipped(install=install)
        for name, metrics in results.items():
            out.print(f"{name}: dev {metrics.get('dev')}", highlight=False)
        return
    if not task or not train_file or not output:
        raise RolecraftError("--task, --train and --output are needed (or --reproduce)")
    metrics = train(TrainConfig(task=task, train_files=list(train_file), output_dir=output, dev_file=dev_file,
                                init_from=init_from, epochs=epochs, max_minutes=max_minutes))
    out.print(f"Saved to {output}; dev metrics: {metrics.get('dev')}", highlight=False)


DEMO_SCRIPT = [
    "Hello! Who are you, and where do you live?",
    "What do you do every evening?",
    "Do you have any family?",
    "What did I ask you first?",
]


@app.command()
@friendly
def demo(
    character: Annotated[str, typer.Argument(help="Bundled example id or file")] = "mira",
    backend: Backend = "local",
    model: ModelOpt = None,
    home: HomeOpt = None,
) -> None:
    """The main job: import a bundled character, show its persona, hold a scripted multi-turn chat."""
    from .paths import slugify

    ws = _workspace(home)
    c = ws.resolve(character)
    slug = slugify(c.name)
    if ws.exists(slug):  # never overwrite a character the user may have edited
        c, note = ws.get(slug), "already in the workspace"
    else:
        slug, note = ws.add(c), "imported into the workspace"
    out.rule(f"[bold]{c.name}[/] — {note} as '{slug}'")
    for i, s in enumerate(c.statements, 1):
        out.print(f"{i:>3}. {s.text}", highlight=False)
    agent, load_s = _agent(slug, backend, model, None, "rag", 4, "chat", home, seed=7)
    from .apc import APCScorer

    t0 = time.perf_counter()
    scorer = APCScorer.pretrained()
    out.rule(f"Chat on {backend}:{agent.llm.name} (model loaded in {load_s:.1f}s, "
             f"APC scorer in {time.perf_counter() - t0:.1f}s)")
    out.print("[dim]Under each reply: the statements it was given (•), its APC score over all statements, "
              "and any statement it contradicts (✗).[/]")
    for message in DEMO_SCRIPT:
        out.print(f"[bold cyan]You:[/] {message}", highlight=False)
        _speak(agent, message, show_statements=True)
        _faithfulness(scorer, agent, message)


def _register_subcommands() -> None:
    # These modules import only typer at top level, so registering them keeps `rolecraft --help` fast.
    from .server.command import serve
    from .synth.commands import extract, synth_app

    app.command("serve")(friendly(serve))
    app.command("extract", help="Extract persona statements from the profile (same as `synth statements`).")(extract)
    app.add_typer(synth_app, name="synth")


_register_subcommands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
