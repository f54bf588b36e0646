"""The `rolecraft` command line: thin commands over the library."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .console import err, friendly, out
from .errors import RolecraftError

app = typer.Typer(
    help="Build role-play characters, chat with them, and measure how faithful they stay to their persona.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
           style: str, home: Path | None, rerank: bool = False, **sampling: Any):  # noqa: ANN202
    from .agent import AgentConfig, RolePlayAgent
    from .llm import load_llm

    if mode not in ("rag", "all", "none"):
        raise RolecraftError(f"--mode must be 'rag', 'all' or 'none', not {mode!r}")
    if style not in ("chat", "quote"):
        raise RolecraftError(f"--style must be 'chat' or 'quote', not {style!r}")
    ws = _workspace(home)
    c = ws.resolve(character)
    if adapter:
        from .train.common import resolve_adapter

        adapter = str(resolve_adapter(adapter, ws, c.slug))
    t0 = time.perf_counter()
    llm = load_llm(backend, model, adapter=adapter)
    load_s = time.perf_counter() - t0
    cfg = AgentConfig(mode=mode, top_k=top_k, style=style, rerank=rerank,  # type: ignore[arg-type]
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
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter: a name in the character's adapters/ "
                                                "(e.g. 'dpo') or a folder (local backend)")] = None,
    mode: Annotated[str, typer.Option(help="rag: top-k statements; all: every statement; none: name only")] = "rag",
    top_k: Annotated[int, typer.Option("--top-k", help="Statements retrieved per message in rag mode")] = 5,
    rerank: Annotated[bool, typer.Option(help="rag: rerank the embedding top 20 with the relevance "
                                         "cross-encoder (two-stage retrieval)")] = False,
    style: Annotated[str, typer.Option(help="chat: chat messages; quote: EGOS quoted speech")] = "chat",
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (0 = greedy)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Longest reply, in tokens")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible replies")] = None,
    show_statements: Annotated[bool, typer.Option(help="Print the statements each reply was given")] = False,
    home: HomeOpt = None,
) -> None:
    """Chat with a character. Commands inside the chat: /reset, /history, /quit."""
    agent, load_s = _agent(character, backend, model, adapter, mode, top_k, style, home, rerank=rerank,
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
    calibrate: Annotated[list[Path] | None, typer.Option(help="NLI: JSONL rows to calibrate the trained model "
                                                         "on (rows it did not train on); repeatable")] = None,
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
                                init_from=init_from, epochs=epochs, max_minutes=max_minutes,
                                calibration_files=list(calibrate or [])))
    out.print(f"Saved to {output}; dev metrics: {metrics.get('dev')}", highlight=False)


def _character_target(character: str, home: Path | None):  # noqa: ANN202
    from .synth.pipeline import target_for

    return target_for(character, home)[0]


@train_app.command("sft")
@friendly
def train_sft_cmd(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id, or a profile file")],
    alpaca: Annotated[list[Path] | None, typer.Option("--alpaca", help="Alpaca JSON/JSONL file (instruction, "
                                                      "input, output); repeatable")] = None,
    alpaca_limit: Annotated[int | None, typer.Option(help="Use at most this many Alpaca rows")] = None,
    experiences: Annotated[bool, typer.Option(help="Train on the experience rows (datasets/sft.jsonl)")] = True,
    name: Annotated[str, typer.Option(help="Adapter name, saved as <workspace>/<character>/adapters/<name>")] = "sft",
    parent: Annotated[str | None, typer.Option(help="Start from this adapter (name or folder), merged in")] = None,
    model: ModelOpt = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps")] = 4,
    batch_size: Annotated[int, typer.Option(min=1)] = 2,
    grad_accum: Annotated[int, typer.Option(min=1, help="Gradient accumulation steps")] = 1,
    learning_rate: Annotated[float, typer.Option("--lr")] = 2e-4,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank")] = 8,
    alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default: 2 x rank)")] = None,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per example (prompt + reply)")] = 384,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch")] = None,
    home: HomeOpt = None,
) -> None:
    """LoRA SFT on experience dialogues and/or Alpaca instruction data; loss on the replies only."""
    from .train.common import LoraSettings, resolve_adapter
    from .train.sft import SftConfig, train_sft

    target = _character_target(character, home)
    rows = target.folder / "datasets" / "sft.jsonl"
    exp = rows if experiences and rows.is_file() and rows.stat().st_size > 0 else None
    if experiences and exp is None and not alpaca:
        raise RolecraftError(f"No experience rows in {rows} (make them with `rolecraft synth all {target.slug}`) "
                             "and no --alpaca file.")
    cfg = SftConfig(output_dir=target.folder / "adapters" / name, experiences=exp, alpaca=list(alpaca or []),
                    alpaca_limit=alpaca_limit, model=model,
                    parent=resolve_adapter(parent, target.workspace, target.slug),
                    lora=LoraSettings(rank=rank, alpha=alpha or 2 * rank), steps=steps, batch_size=batch_size,
                    grad_accum=grad_accum, learning_rate=learning_rate, max_length=max_length,
                    gradient_checkpointing=gradient_checkpointing, threads=threads)
    summary = train_sft(cfg)
    if not summary:  # a non-main process under accelerate launch
        return
    out.print(f"Saved adapter '{name}' to {cfg.output_dir}: {summary['examples']} examples, {summary['steps']} steps, "
              f"{summary['seconds_per_step']} s/step, losses {[round(x, 3) for x in summary['losses']]}",
              highlight=False)


@train_app.command("dpo")
@friendly
def train_dpo_cmd(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id, or a profile file")],
    name: Annotated[str, typer.Option(help="Adapter name, saved as <workspace>/<character>/adapters/<name>")] = "dpo",
    parent: Annotated[str | None, typer.Option(help="Policy adapter to start from, e.g. 'sft' (merged in)")] = None,
    queries: Annotated[list[Path] | None, typer.Option("--queries", help="Extra queries file (JSONL/JSON list "
                                                       "of strings or {query}); repeatable")] = None,
    heldout: Annotated[int, typer.Option(min=0, help="Queries kept out of training for evaluation")] = 6,
    max_queries: Annotated[int | None, typer.Option(help="Sample candidates for at most this many queries")] = None,
    candidates: Annotated[int, typer.Option(min=2, help="Replies sampled per query")] = 4,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest candidate reply")] = 48,
    margin: Annotated[float, typer.Option(help="Minimum APC gap between chosen and rejected")] = 0.5,
    ooc: Annotated[str, typer.Option(help="Out-of-character candidates: 'reject' (rejected side) or 'drop'")] = (
        "reject"),
    max_pairs: Annotated[int | None, typer.Option(help="Train on at most this many pairs")] = None,
    pairs_file: Annotated[Path | None, typer.Option("--pairs", help="Train on these pairs (JSONL written by an "
                                                    "earlier run); no sampling. Use this under accelerate launch")]
    = None,
    train: Annotated[bool, typer.Option("--train/--pairs-only", help="--pairs-only: make the pairs, train nothing")]
    = True,
    mode: Annotated[str, typer.Option(help="Prompt statements: rag (top-k) or all")] = "rag",
    top_k: Annotated[int, typer.Option("--top-k")] = 5,
    model: ModelOpt = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps")] = 4,
    batch_size: Annotated[int, typer.Option(min=1)] = 2,
    grad_accum: Annotated[int, typer.Option(min=1)] = 1,
    learning_rate: Annotated[float, typer.Option("--lr")] = 1e-4,
    beta: Annotated[float, typer.Option(help="DPO beta")] = 0.1,
    rank: Annotated[int, typer.Option(min=1, help="LoRA rank")] = 8,
    alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default: 2 x rank)")] = None,
    max_length: Annotated[int, typer.Option(help="Prompt + reply tokens")] = 384,
    max_prompt_length: Annotated[int, typer.Option(help="Longer prompts drop their pair")] = 320,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch")] = None,
    home: HomeOpt = None,
) -> None:
    """APC-based DPO: sample replies, score them over all statements, pair best against worst, train a LoRA."""
    from .agent import AgentConfig, RolePlayAgent
    from .apc import APCScorer
    from .llm import load_llm
    from .train.common import LoraSettings, limit_threads, resolve_adapter
    from .train.dpo import DpoConfig, train_dpo
    from .train.pairs import (
        PairConfig,
        make_pairs,
        read_queries,
        sample_candidates,
        score_candidates,
        split_queries,
        write_jsonl,
    )

    if mode not in ("rag", "all"):
        raise RolecraftError(f"--mode must be 'rag' or 'all', not {mode!r}")
    target = _character_target(character, home)
    c = target.character()
    if not c.statements:
        raise RolecraftError(f"'{c.name}' has no persona statements; run `rolecraft extract` first.")
    parent_path = resolve_adapter(parent, target.workspace, target.slug)
    pc = PairConfig(candidates=candidates, max_new_tokens=max_new_tokens, margin=margin, ooc=ooc,
                    max_pairs=max_pairs)
    cfg = DpoConfig(output_dir=target.folder / "adapters" / name, model=model, parent=parent_path,
                    lora=LoraSettings(rank=rank, alpha=alpha or 2 * rank), pairs=pc, steps=steps,
                    batch_size=batch_size, grad_accum=grad_accum, learning_rate=learning_rate, beta=beta,
                    max_length=max_length, max_prompt_length=max_prompt_length,
                    gradient_checkpointing=gradient_checkpointing, threads=threads)
    cfg.check()
    pairs_out = target.folder / "datasets" / "dpo_pairs.jsonl"
    if pairs_file is not None:
        from .train.pairs import read_jsonl

        if not pairs_file.is_file():
            raise RolecraftError(f"Pairs file not found: {pairs_file}")
        summary = train_dpo(cfg, read_jsonl(pairs_file))
        if summary:  # under accelerate launch only the main process reports
            out.print(f"Saved adapter '{name}' to {cfg.output_dir}: {summary['pairs']} pairs, "
                      f"{summary['seconds_per_step']} s/step", highlight=False)
        return
    found = read_queries(target.folder, list(queries or []))
    if not found:
        raise RolecraftError(f"No queries for '{c.name}': run `rolecraft synth queries {target.slug}` "
                             "or give --queries.")
    train_q, held = split_queries(found, heldout)
    if max_queries:
        train_q = train_q[:max_queries]
    limit_threads(threads)
    agent = RolePlayAgent(c, load_llm("local", model, adapter=parent_path), AgentConfig(mode=mode, top_k=top_k))
    groups = sample_candidates(agent, train_q, pc)
    groups = score_candidates(groups, APCScorer.pretrained(), c.statement_texts, c.name)
    pairs, skipped = make_pairs(groups, pc)
    write_jsonl(pairs_out, pairs)
    write_jsonl(target.folder / "datasets" / "dpo_heldout.jsonl", [{"query": q} for q in held])
    n_ooc = sum(bool(x["ooc"]) for g in groups for x in g["candidates"])
    out.print(f"{len(pairs)} pairs from {len(groups)} queries ({n_ooc} out-of-character candidates); "
              f"skipped: {skipped}", highlight=False)
    if not pairs:
        raise RolecraftError("No preference pairs passed the margin; sample more candidates or lower --margin.")
    if not train:
        out.print(f"Pairs in {pairs_out}", highlight=False)
        return
    del agent
    summary = train_dpo(cfg, pairs)
    out.print(f"Saved adapter '{name}' to {cfg.output_dir}: {summary['pairs']} pairs, {summary['steps']} steps, "
              f"{summary['seconds_per_step']} s/step, losses {[round(x, 3) for x in summary['losses']]}",
              highlight=False)


@app.command()
@friendly
def build(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id, or a profile file")],
    preset: Annotated[str | None, typer.Option(help="cpu-small | gpu (a config's `preset` key also works)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML or YAML config; overrides the preset")]
    = None,
    force: Annotated[bool, typer.Option(help="Run every step even when its inputs are unchanged")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars")] = True,
    home: HomeOpt = None,
) -> None:
    """The whole pipeline: import, statements, queries, discriminators, SFT, DPO, report. Unchanged steps skip."""
    from rich.markup import escape

    from .build import build as run_build
    from .build import load_config

    cfg = load_config(config, preset)
    t0 = time.perf_counter()
    result = run_build(character, cfg, home, force=force, progress=progress,
                       log=lambda line: out.print(f"[bold]build[/] {escape(line)}", highlight=False))
    table = Table("step", "status", "seconds", title=f"{result.slug} ({cfg['preset']})")
    for step, info in result.steps.items():
        table.add_row(step, escape(str(info["status"])), f"{info['seconds']:.1f}")
    out.print(table)
    if result.report:
        out.print(f"Report: {result.report}", highlight=False)
    out.print(f"Done in {time.perf_counter() - t0:.1f}s", highlight=False)


@app.command("export-model")
@friendly
def export_model_cmd(
    character: Annotated[str, typer.Argument(help="Workspace name, bundled example id, or file")],
    adapter: Annotated[str | None, typer.Option(help="Adapter to merge: a name (e.g. 'dpo') or folder; "
                                                "none: the base model")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder (default: <character>/export)")] = None,
    model: ModelOpt = None,
    template_gguf: Annotated[Path | None, typer.Option(help="GGUF of the base model to copy tokenizer and "
                                                       "metadata from (default: the embedded SmolLM2)")] = None,
    dtype: Annotated[str, typer.Option(help="f16 | f32")] = "f16",
    home: HomeOpt = None,
) -> None:
    """Merge an adapter into the model, write a GGUF (llamacpp backend, Ollama) and an Ollama Modelfile."""
    from .export import export_model
    from .train.common import resolve_adapter

    ws = _workspace(home)
    c = ws.resolve(character)
    path = resolve_adapter(adapter, ws, c.slug)
    folder = output or (ws.path(c.slug) / "export")
    files = export_model(c, path, folder, model=model, template=template_gguf, dtype=dtype)
    out.print(f"Wrote {files['gguf']} and {files['modelfile']}", highlight=False)
    out.print(f"  rolecraft chat {c.slug} --backend llamacpp --model {files['gguf']}", highlight=False)
    out.print(f"  cd {folder} && ollama create {c.slug} -f Modelfile && ollama run {c.slug}", highlight=False)


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
    from .evaluate.commands import eval_app
    from .server.command import serve
    from .synth.commands import extract, synth_app

    app.command("serve")(friendly(serve))
    app.command("extract", help="Extract persona statements from the profile (same as `synth statements`).")(extract)
    app.add_typer(synth_app, name="synth")
    app.add_typer(eval_app, name="eval")


_register_subcommands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # `python -m rolecraft.cli` (and `accelerate launch -m rolecraft.cli`)
    main()
