"""`rolecraft eval ...`: thin commands over `rolecraft.evaluate` (only typer is imported at module level, so
`rolecraft --help` stays fast)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ..console import err, friendly, out
from ..errors import RolecraftError

eval_app = typer.Typer(
    help="Evaluate characters: the ΔAPC table, interviews with an LLM judge, the EGOS memory, consistency and "
    "quality tests, the out-of-character rate. Each writes results.jsonl (resumable) and report.md/.html.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


Characters = Annotated[list[str], typer.Argument(help="Profile files, workspace names or bundled example ids")]
CharacterArg = Annotated[str, typer.Argument(help="A profile file, workspace name or bundled example id")]
Backend = Annotated[str, typer.Option("--backend", "-b", help="Role-play model backend: local | llamacpp | openai")]
Model = Annotated[str | None, typer.Option("--model", "-m", help="Role-play model ('smollm2', folder, .gguf, id)")]
BaseUrl = Annotated[str | None, typer.Option("--base-url", help="Endpoint of the role-play model (openai backend)")]
JudgeBackend = Annotated[str, typer.Option("--judge-backend", help="Judge/interviewer backend: local | llamacpp | "
                                           "openai")]
JudgeModel = Annotated[str | None, typer.Option("--judge-model", help="Judge model ('smollm2', folder, served id)")]
JudgeUrl = Annotated[str | None, typer.Option("--judge-base-url", help="Judge endpoint (openai judge backend)")]
ServeJudge = Annotated[bool, typer.Option("--serve-judge", help="Serve the judge model (--judge-model, default the "
                                          "embedded one) on loopback and reach it through the OpenAI-compatible "
                                          "API")]
JudgeTries = Annotated[int, typer.Option("--judge-tries", min=1, help="Ask again (sampling) when a judgement does "
                                         "not parse; 1 = never")]
JudgePrime = Annotated[bool, typer.Option("--judge-prime/--no-judge-prime", help="Judge in two calls: reasoning, "
                                          "then its label (Score:/Answer:) as a prefill the judge continues; "
                                          "small judges rarely end with the label on their own")]
Limit = Annotated[int | None, typer.Option("--limit", "-n", min=1, help="At most this many items (quick runs)")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: <workspace>/evals/<eval>)")]
Fresh = Annotated[bool, typer.Option("--fresh", help="Discard earlier results in the output folder")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch")]
MaxNew = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest reply")]
Batch = Annotated[int, typer.Option("--batch-size", min=1, help="Prompts generated together")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars")]
Home = Annotated[Path | None, typer.Option("--home", help="Workspace folder (default: $ROLECRAFT_HOME)")]
TopK = Annotated[int, typer.Option("--top-k", min=1, help="Statements retrieved per message (RAG)")]


def _out_dir(out_opt: Path | None, home: Path | None, kind: str) -> Path:
    if out_opt is not None:
        return out_opt
    from ..workspace import Workspace

    return Workspace(home).root / "evals" / kind


def _role_llm(backend: str, model: str | None, base_url: str | None) -> Any:
    from ..llm import load_llm

    t0 = time.perf_counter()
    llm = load_llm(backend, model, **({"base_url": base_url} if backend == "openai" else {}))
    err.print(f"[dim]Role-play model {backend}:{llm.name} (loaded in {time.perf_counter() - t0:.1f}s)[/]")
    return llm


@contextmanager
def _judge(enabled: bool, backend: str, model: str | None, base_url: str | None, serve: bool, tries: int,
           max_new_tokens: int = 128, prime: bool = True) -> Iterator[Any]:
    """The Judge (or None): an endpoint, a local model, or the local model served on loopback."""
    if not enabled:
        yield None
        return
    from .judge import Judge, load_judge_llm, served_local_judge

    if serve:
        with served_local_judge(model) as (url, name):
            err.print(f"[dim]Judge: {model or 'smollm2'} served at {url} (OpenAI-compatible path)[/]")
            llm = load_judge_llm("openai", name, url, concurrency=8)  # the server batches what arrives together
            try:
                yield Judge(llm, max_new_tokens=max_new_tokens, tries=tries, prime=prime)
            finally:
                llm.close()  # type: ignore[attr-defined]
        return
    llm = load_judge_llm(backend, model, base_url)
    err.print(f"[dim]Judge: {backend}:{llm.name}[/]")
    yield Judge(llm, max_new_tokens=max_new_tokens, tries=tries, prime=prime)


def _done(md: Path, page: Path, t0: float) -> None:
    out.print(f"Report: {page}\n        {md}\nResults: {md.parent / 'results.jsonl'}  "
              f"({time.perf_counter() - t0:.1f}s)", highlight=False)


# -- eval apc ---------------------------------------------------------------------------------------------------
@eval_app.command("apc")
@friendly
def apc_cmd(
    characters: Characters,
    queries: Annotated[list[Path] | None, typer.Option("--queries", "-q", help="Held-out queries file (JSON list "
                                                       "or JSONL of strings/{query}); used when a character has "
                                                       "no synthesised queries")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: none, all, rag, rag+dpo, rag+best")] = (
        "none,all,rag,rag+dpo,rag+best"),
    best_of: Annotated[int, typer.Option("--best-of", min=2, help="Candidates for rag+best")] = 4,
    adapter: Annotated[str, typer.Option("--adapter", help="LoRA adapter for rag+dpo: a folder (all characters) or a "
                                         "name in each character's workspace adapters/")] = "dpo",
    top_k: TopK = 5,
    max_new_tokens: MaxNew = 48,
    batch_size: Batch = 8,
    drift_turns: Annotated[int, typer.Option("--drift-turns", min=0, help="Turns of the long chat for the drift "
                                             "plot (0: none)")] = 12,
    limit: Limit = None,
    backend: Backend = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    judge: Annotated[bool, typer.Option("--judge/--no-judge", help="Add an LLM-judge column")] = False,
    judge_backend: JudgeBackend = "local",
    judge_model: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    serve_judge: ServeJudge = False,
    judge_tries: JudgeTries = 1,
    judge_prime: JudgePrime = True,
    out_dir: Out = None,
    fresh: Fresh = False,
    threads: Threads = None,
    seed: Annotated[int, typer.Option(help="Sampling seed (best-of-n candidates)")] = 0,
    progress: Progress = True,
    home: Home = None,
) -> None:
    """The ΔAPC table: APC of each method against a no-persona baseline, per character, with 95% intervals."""
    from .apc_table import METHODS, ApcEvalConfig, ApcRun, build_report, run_apc, run_drift
    from .common import find_adapter, held_out_queries, limit_threads, load_target
    from .store import ResultLog

    t0 = time.perf_counter()
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if bad:
        raise RolecraftError(f"Unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}.")
    if "none" not in chosen:
        chosen = ("none", *chosen)  # ΔAPC needs its baseline
    limit_threads(threads)
    targets = [load_target(c, home) for c in characters]
    run = ApcRun(targets, {}, {})
    for t in targets:
        qs, source = held_out_queries(t, queries or [])
        run.queries[t.slug], run.query_source[t.slug] = qs[:limit] if limit else qs, source
        found = Path(adapter) if (Path(adapter) / "adapter_config.json").is_file() else find_adapter(t, adapter)
        if found:
            run.adapters[t.slug] = found
    cfg = ApcEvalConfig(methods=chosen, top_k=top_k, max_new_tokens=max_new_tokens, best_of=best_of,
                        batch_size=batch_size, drift_turns=drift_turns, seed=seed,
                        judge=(judge_model or "smollm2") if judge else None)
    folder = _out_dir(out_dir, home, "apc")
    log = ResultLog(folder, cfg.settings(), fresh=fresh)
    from ..apc import APCScorer

    scorer = APCScorer.pretrained()
    llm = _role_llm(backend, model, base_url)
    adapters: dict[Path, Any] = {}

    def adapter_llm(path: Path) -> Any:
        from ..llm import load_llm

        if path not in adapters:
            adapters[path] = load_llm("local", model, adapter=path)
        return adapters[path]

    with _judge(judge, judge_backend, judge_model, judge_base_url, serve_judge, judge_tries, prime=judge_prime) as j:
        run_apc(run, llm, scorer, cfg, log, adapter_llm=adapter_llm, judge=j, progress=progress)
    run_drift(run, llm, scorer, cfg, log, progress=progress)
    rep = build_report(log, run, cfg, wall_s=time.perf_counter() - t0)
    md, page = rep.write(folder)
    out.print(rep.sections[0].table and _table(rep.sections[0].title, *rep.sections[0].table))
    _done(md, page, t0)


def _table(title: str, head: list[str], rows: list[list[str]]) -> Any:
    from rich.table import Table

    table = Table(*head, title=title)
    for r in rows:
        table.add_row(*r)
    return table


# -- eval interview ---------------------------------------------------------------------------------------------
@eval_app.command("interview")
@friendly
def interview_cmd(
    character: CharacterArg,
    questions: Annotated[Path | None, typer.Option("--questions", help="Single-turn questions: JSON list of "
                                                   "{topic_id, topic, question}")] = None,
    multi: Annotated[Path | None, typer.Option("--multi", help="Multi-turn seed questions (same format)")] = None,
    limit: Limit = None,
    multi_limit: Annotated[int | None, typer.Option("--multi-limit", min=1, help="At most this many seeds")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Answers per multi-turn interview")] = 3,
    mode: Annotated[str, typer.Option(help="rag | all | none (the statements in the prompt)")] = "rag",
    top_k: TopK = 5,
    max_new_tokens: MaxNew = 64,
    batch_size: Batch = 8,
    backend: Backend = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    judge_backend: JudgeBackend = "local",
    judge_model: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    serve_judge: ServeJudge = False,
    judge_tries: JudgeTries = 1,
    judge_prime: JudgePrime = True,
    judge_tokens: Annotated[int, typer.Option("--judge-max-tokens", min=16, help="Longest judge reasoning")] = 128,
    out_dir: Out = None,
    fresh: Fresh = False,
    threads: Threads = None,
    progress: Progress = True,
    home: Home = None,
) -> None:
    """Single- and multi-turn interviews judged 1-7 on memory, values, personality, hallucination, stability."""
    from .common import limit_threads, load_target
    from .interview import InterviewConfig, build_report, read_interview_file, run_multi, run_single
    from .store import ResultLog

    t0 = time.perf_counter()
    if questions is None and multi is None:
        raise RolecraftError("Give --questions and/or --multi (interview files, e.g. ../shared/data/interviews/"
                             "generated_agent_interview_<Name>.json).")
    if mode not in ("rag", "all", "none"):
        raise RolecraftError(f"--mode must be 'rag', 'all' or 'none', not {mode!r}")
    single_q = read_interview_file(questions)[:limit] if questions else []
    seeds = read_interview_file(multi)[:multi_limit] if multi else []
    limit_threads(threads)
    target = load_target(character, home)
    cfg = InterviewConfig(mode=mode, top_k=top_k, max_new_tokens=max_new_tokens, rounds=rounds,
                          batch_size=batch_size, judge=judge_model or "smollm2", judge_prime=judge_prime,
                          judge_tokens=judge_tokens)
    folder = _out_dir(out_dir, home, f"interview-{target.slug}")
    log = ResultLog(folder, cfg.settings(), fresh=fresh)
    llm = _role_llm(backend, model, base_url)
    with _judge(True, judge_backend, judge_model, judge_base_url, serve_judge, judge_tries, judge_tokens,
                judge_prime) as judge:
        if single_q:
            run_single(target, llm, judge, single_q, cfg, log, progress=progress)
        if seeds:
            run_multi(target, llm, judge.llm, judge, seeds, cfg, log, progress=progress)
    rep = build_report(log, target, cfg, wall_s=time.perf_counter() - t0, served=serve_judge)
    md, page = rep.write(folder)
    out.print(_table(rep.sections[0].title, *rep.sections[0].table))  # type: ignore[misc]
    out.print(" · ".join(f"{k}: {v}" for k, v in rep.summary), highlight=False)
    _done(md, page, t0)


# -- eval memory / consistency / quality (EGOS) ----------------------------------------------------------------
@eval_app.command("memory")
@friendly
def memory_cmd(
    character: CharacterArg,
    fillers: Annotated[int, typer.Option(min=0, help="Small-talk turns between the fact and the question")] = 2,
    conditions: Annotated[str, typer.Option(help="Comma-separated: full (whole history kept), summarised "
                                            "(forced summarisation)")] = "full,summarised",
    mode: Annotated[str, typer.Option(help="rag | all | none")] = "rag",
    max_new_tokens: MaxNew = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Chats run together")] = 10,
    limit: Limit = None,
    backend: Backend = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    out_dir: Out = None,
    fresh: Fresh = False,
    threads: Threads = None,
    progress: Progress = True,
    home: Home = None,
) -> None:
    """EGOS memory: a fact given in turn 1 is asked back after k turns, with and without forced summarisation."""
    from .common import limit_threads, load_target
    from .egos import CONDITIONS, MemoryConfig, memory_report, run_memory
    from .store import ResultLog

    t0 = time.perf_counter()
    conds = tuple(x.strip() for x in conditions.split(",") if x.strip())
    if not conds or any(x not in CONDITIONS for x in conds):
        raise RolecraftError(f"--conditions takes {', '.join(CONDITIONS)}, not {conditions!r}.")
    if mode not in ("rag", "all", "none"):
        raise RolecraftError(f"--mode must be 'rag', 'all' or 'none', not {mode!r}")
    limit_threads(threads)
    target = load_target(character, home)
    cfg = MemoryConfig(fillers=fillers, mode=mode, max_new_tokens=max_new_tokens, batch_size=batch_size)
    folder = _out_dir(out_dir, home, f"memory-{target.slug}")
    log = ResultLog(folder, cfg.settings(), fresh=fresh)
    llm = _role_llm(backend, model, base_url)
    run_memory(target, llm, cfg, log, conds, limit=limit, progress=progress)
    rep = memory_report(log, target, cfg, wall_s=time.perf_counter() - t0)
    md, page = rep.write(folder)
    out.print(_table(rep.sections[0].title, *rep.sections[0].table))  # type: ignore[misc]
    _done(md, page, t0)


def _judge_opts_cmd(kind: str) -> Callable[..., Any]:
    """consistency and quality share everything but their test."""

    def command(
        character: CharacterArg,
        systems: Annotated[str, typer.Option(help="quality: two systems 'mode[:style]' to compare, e.g. "
                                             "'rag,none' or 'rag:quote,rag:chat'")] = "rag,none",
        queries: Annotated[list[Path] | None, typer.Option("--queries", "-q", help="quality: queries file "
                                                           "(default: the character's, else generic ones)")] = None,
        limit: Limit = None,
        max_new_tokens: MaxNew = 48,
        backend: Backend = "local",
        model: Model = None,
        base_url: BaseUrl = None,
        judge_backend: JudgeBackend = "local",
        judge_model: JudgeModel = None,
        judge_base_url: JudgeUrl = None,
        serve_judge: ServeJudge = False,
        judge_tries: JudgeTries = 1,
        judge_prime: JudgePrime = True,
        out_dir: Out = None,
        fresh: Fresh = False,
        threads: Threads = None,
        progress: Progress = True,
        home: Home = None,
    ) -> None:
        from .common import held_out_queries, limit_threads, load_target
        from .egos import judge_report, parse_system, run_consistency, run_quality
        from .store import ResultLog

        t0 = time.perf_counter()
        limit_threads(threads)
        target = load_target(character, home)
        pair = tuple(s.strip() for s in systems.split(",") if s.strip())
        if kind == "quality":
            if len(pair) != 2:
                raise RolecraftError(f"--systems needs exactly two systems, not {systems!r}.")
            for s in pair:
                parse_system(s)
        settings = {"test": kind, "max_new_tokens": max_new_tokens, "judge": judge_model or "smollm2",
                    "judge_prime": judge_prime}
        folder = _out_dir(out_dir, home, f"{kind}-{target.slug}")
        log = ResultLog(folder, settings, fresh=fresh)
        llm = _role_llm(backend, model, base_url)
        with _judge(True, judge_backend, judge_model, judge_base_url, serve_judge, judge_tries,
                    prime=judge_prime) as judge:
            if kind == "consistency":
                run_consistency(target, llm, judge, log, limit=limit, max_new_tokens=max_new_tokens,
                                progress=progress)
            else:
                qs = held_out_queries(target, queries or [])[0]
                run_quality(target, llm, judge, pair, qs[:limit] if limit else qs, log,  # type: ignore[arg-type]
                            max_new_tokens=max_new_tokens, progress=progress)
        rep = judge_report(log, target, judge_model or "smollm2", wall_s=time.perf_counter() - t0)
        md, page = rep.write(folder)
        out.print(" · ".join(f"{k}: {v}" for k, v in rep.summary), highlight=False)
        _done(md, page, t0)

    return command


eval_app.command("consistency", help="EGOS consistency: a judge picks the real line of the character from a real "
                 "and a generated one (both orders); reports how often it is fooled.")(
    friendly(_judge_opts_cmd("consistency")))
eval_app.command("quality", help="EGOS quality: a judge compares two systems' replies pairwise, positions swapped "
                 "to cancel order bias.")(friendly(_judge_opts_cmd("quality")))


# -- eval ooc ---------------------------------------------------------------------------------------------------
@eval_app.command("ooc")
@friendly
def ooc_cmd(
    characters: Annotated[list[str] | None, typer.Argument(help="Characters to generate replies for (optional "
                                                           "with --from)")] = None,
    from_: Annotated[list[Path] | None, typer.Option("--from", help="results.jsonl of other evals whose replies "
                                                     "to check; repeatable")] = None,
    modes: Annotated[str, typer.Option(help="Prompt modes to generate with: rag, all, none")] = "rag,none",
    style: Annotated[str, typer.Option(help="chat | quote")] = "chat",
    queries: Annotated[list[Path] | None, typer.Option("--queries", "-q", help="Queries file")] = None,
    limit: Limit = None,
    max_new_tokens: MaxNew = 48,
    backend: Backend = "local",
    model: Model = None,
    base_url: BaseUrl = None,
    judge: Annotated[bool, typer.Option("--judge/--no-judge", help="Ask an LLM judge too")] = False,
    judge_backend: JudgeBackend = "local",
    judge_model: JudgeModel = None,
    judge_base_url: JudgeUrl = None,
    serve_judge: ServeJudge = False,
    judge_tries: JudgeTries = 1,
    judge_prime: JudgePrime = True,
    out_dir: Out = None,
    fresh: Fresh = False,
    threads: Threads = None,
    home: Home = None,
) -> None:
    """Out-of-character rate by rules (assistant voice, third-person narration, lines for the user) + judge."""
    from .common import held_out_queries, limit_threads, load_target
    from .ooc_rate import generate_replies, ooc_report, replies_from_results, run_ooc
    from .store import ResultLog

    t0 = time.perf_counter()
    if not characters and not from_:
        raise RolecraftError("Give characters to generate replies for, or --from results.jsonl files.")
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    if any(m not in ("rag", "all", "none") for m in chosen) or style not in ("chat", "quote"):
        raise RolecraftError("--modes takes rag, all, none; --style chat or quote.")
    limit_threads(threads)
    items = replies_from_results(from_ or [])
    if limit:
        items = items[:limit]
    if characters:
        llm = _role_llm(backend, model, base_url)
        for ref in characters:
            t = load_target(ref, home)
            qs = held_out_queries(t, queries or [])[0]
            items += generate_replies(t, llm, qs[:limit] if limit else qs, chosen, max_new_tokens, style)
    folder = _out_dir(out_dir, home, "ooc")
    log = ResultLog(folder, {"judge": (judge_model or "smollm2") if judge else None, "judge_prime": judge_prime},
                    fresh=fresh)
    with _judge(judge, judge_backend, judge_model, judge_base_url, serve_judge, judge_tries, prime=judge_prime) as j:
        run_ooc(items, log, j)
    rep = ooc_report(log, wall_s=time.perf_counter() - t0, judge_name=judge_model or "smollm2")
    md, page = rep.write(folder)
    out.print(_table(rep.sections[0].title, *rep.sections[0].table))  # type: ignore[misc]
    _done(md, page, t0)
