"""The training report: APC and out-of-character rate on held-out queries per stage, pairs, examples.

Each stage (base model, after SFT, after DPO) answers every held-out query once, greedily, so the
stages differ only by their weights. APC is the sum over all statements of a reply; the report gives
its mean over queries with a 95% percentile-bootstrap interval (over queries), and the share of
replies the out-of-character rules flag.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import ooc
from .paths import atomic_write_bytes, atomic_write_text


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean and a percentile bootstrap interval over the values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n, arr.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(arr.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_delta(base: dict[str, Any], other: dict[str, Any]) -> tuple[float, float, float]:
    """Mean APC change per held-out query against `base`, with a paired bootstrap interval."""
    before = {r["query"]: r["apc"] for r in base["rows"]}
    return bootstrap_ci([r["apc"] - before[r["query"]] for r in other["rows"] if r["query"] in before])


def evaluate_stage(agent: Any, scorer: Any, queries: list[str], max_new_tokens: int = 48,
                   progress: bool = True) -> dict[str, Any]:
    """Greedy replies to the held-out queries, their APC over all statements and OOC verdicts."""
    from tqdm import tqdm

    c = agent.character
    t0 = time.perf_counter()
    prompts = [agent.prepare(q) for q in queries]
    sampling = dict(prompts[0][3], temperature=0.0, max_new_tokens=max_new_tokens) if prompts else {}
    replies: list[str] = []
    for i in tqdm(range(0, len(prompts), 8), desc="held-out replies", disable=not progress):
        chunk = prompts[i : i + 8]
        replies += [agent.clean(r) for r in agent.llm.chat_batch([p[0] for p in chunk], **sampling)]
    rows = []
    for q, r in zip(queries, replies, strict=True):
        apc = float(scorer.score(c.statement_texts, q, [r], character=c.name)[0])
        verdict = ooc.check(r, c.name, agent.config.user_name)
        rows.append({"query": q, "reply": r, "apc": apc, "ooc": list(verdict.reasons)})
    apc_values = [r["apc"] for r in rows]
    mean, lo, hi = bootstrap_ci(apc_values)
    return {"rows": rows, "apc_mean": mean, "apc_low": lo, "apc_high": hi, "statements": len(c.statement_texts),
            "ooc_rate": sum(bool(r["ooc"]) for r in rows) / max(len(rows), 1), "seconds": time.perf_counter() - t0}


def plot(stages: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Bars of mean APC with bootstrap intervals, and of out-of-character rate, per stage."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stages)
    means = [stages[n]["apc_mean"] for n in names]
    err = [[m - stages[n]["apc_low"] for n, m in zip(names, means, strict=True)],
           [stages[n]["apc_high"] - m for n, m in zip(names, means, strict=True)]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    a.bar(names, means, yerr=err, capsize=4, color="#4c78a8")
    a.set_ylabel(f"APC (sum over {next(iter(stages.values()))['statements']} statements)" if stages else "APC")
    a.set_title("APC on held-out queries (95% CI)")
    b.bar(names, [100 * stages[n]["ooc_rate"] for n in names], color="#e45756")
    b.set_ylabel("% replies out of character")
    b.set_ylim(0, 100)
    b.set_title("Out-of-character rate")
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_report(folder: Path, character: str, stages: dict[str, dict[str, Any]], pairs: list[dict[str, Any]],
                 pair_stats: dict[str, Any], timings: dict[str, Any], notes: list[str], examples: int = 3) -> Path:
    """`reports/build.md`, `reports/build.json` and `reports/apc.png` in the character's folder."""
    reports = Path(folder) / "reports"
    if stages:
        plot(stages, reports / "apc.png", character)
    lines = [f"# Build report: {character}", "", f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {k} | {v.get('status', '')} | {v.get('seconds', 0):.1f} |" for k, v in timings.items()]
    if stages:
        n = len(next(iter(stages.values()))["rows"])
        lines += ["", f"## Held-out evaluation ({n} queries, greedy replies)", "",
                  "| stage | APC mean | 95% CI | Δ vs base (paired 95% CI) | OOC rate |", "|---|---|---|---|---|"]
        base = next(iter(stages.values()))
        for name, s in stages.items():
            delta = paired_delta(base, s) if s is not base else None
            shown = f"{delta[0]:+.3f} [{delta[1]:+.3f}, {delta[2]:+.3f}]" if delta else "—"
            lines.append(f"| {name} | {s['apc_mean']:.3f} | [{s['apc_low']:.3f}, {s['apc_high']:.3f}] | {shown} | "
                         f"{100 * s['ooc_rate']:.0f}% ({sum(bool(r['ooc']) for r in s['rows'])}/{len(s['rows'])}) |")
        lines += ["", f"APC is summed over all {next(iter(stages.values()))['statements']} statements "
                  "(higher is better); the interval is a percentile bootstrap over queries.", "", "![APC](apc.png)"]
    lines += ["", "## Preference pairs", ""]
    if pair_stats:
        lines.append("- " + ", ".join(f"{k}: {v}" for k, v in pair_stats.items()))
    if pairs:
        ooc_pairs = sum(bool(p["rejected_ooc"]) for p in pairs)
        margins = [p["margin"] for p in pairs]
        lines += [f"- {len(pairs)} pairs; {ooc_pairs} reject an out-of-character reply; APC margin mean "
                  f"{np.mean(margins):.2f} (min {min(margins):.2f}, max {max(margins):.2f})", "",
                  "| query | chosen (APC) | rejected (APC, why) |", "|---|---|---|"]
        for p in pairs[:examples]:
            why = ", ".join(p["rejected_ooc"]) or "lower APC"
            lines.append(f"| {_cell(p['query'], 80)} | {_cell(p['chosen'])} ({p['chosen_apc']:.2f}) | "
                         f"{_cell(p['rejected'])} ({p['rejected_apc']:.2f}, {why}) |")
    else:
        lines.append("- no pairs")
    for name, s in stages.items():
        lines += ["", f"## Replies: {name}", "", "| query | reply | APC | OOC |", "|---|---|---|---|"]
        lines += [f"| {_cell(r['query'], 80)} | {_cell(r['reply'])} | {r['apc']:.2f} | {', '.join(r['ooc'])} |"
                  for r in s["rows"]]
    atomic_write_text(reports / "build.md", "\n".join(lines) + "\n")
    for s in list(stages.values())[1:]:
        s["apc_delta"] = dict(zip(("mean", "low", "high"), paired_delta(next(iter(stages.values())), s), strict=True))
    summary = {"character": character, "timings": timings, "notes": notes, "pair_stats": pair_stats,
               "pairs": len(pairs),
               "stages": stages}  # with every held-out reply, so rates can be recomputed under other rules
    atomic_write_text(reports / "build.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return reports / "build.md"
