"""The out-of-character rate: the share of replies that break character.

Replies come from any eval's results.jsonl (ΔAPC replies, interview answers, multi-turn and long-chat turns,
memory chats) or are generated here for a character's queries. The rules of `rolecraft.ooc` flag assistant
voice ("as an AI"), third-person narration of the character, and lines written for the user; an optional LLM
judge gives a second opinion (strict `Verdict: in|out`), and the report shows where the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import ooc
from ..agent import AgentConfig, RolePlayAgent
from ..errors import RolecraftError
from ..llm.base import LLM
from . import report as rp
from .common import Target
from .judge import Judge
from .stats import rate_ci
from .store import ResultLog, stable_id


def replies_from_results(paths: Sequence[Path]) -> list[dict[str, str]]:
    """(character, source, query, reply) items from the results.jsonl of other evals."""
    items: list[dict[str, str]] = []
    for path in paths:
        if not Path(path).is_file():
            raise RolecraftError(f"Results file not found: {path}")
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            ch, kind = r.get("character", "?"), r.get("kind", "?")
            if kind == "reply":
                items.append({"character": ch, "source": f"apc:{r['method']}", "query": r["query"],
                              "reply": r["reply"]})
            elif kind == "single":
                items.append({"character": ch, "source": "interview:single", "query": r["question"],
                              "reply": r["answer"]})
            elif kind == "multi":
                items += [{"character": ch, "source": "interview:multi", "query": t["question"],
                           "reply": t["answer"]} for t in r["turns"]]
            elif kind == "drift":
                items += [{"character": ch, "source": "apc:long chat", "query": t["query"], "reply": t["reply"]}
                          for t in r["turns"]]
            elif kind == "memory":
                items += [{"character": ch, "source": f"memory:{r['condition']}", "query": t["user"],
                           "reply": t["reply"]} for t in r["turns"]]
    return items


def generate_replies(target: Target, llm: LLM, queries: list[str], modes: Sequence[str], max_new_tokens: int = 48,
                     style: str = "chat") -> list[dict[str, str]]:
    c = target.character
    items = []
    for mode in modes:
        agent = RolePlayAgent(c, llm, AgentConfig(mode=mode, style=style, max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
                                                  temperature=0.0))
        prepared = [agent.prepare(q) for q in queries]
        texts = llm.chat_batch([p[0] for p in prepared], **prepared[0][3])
        items += [{"character": c.name, "source": f"{mode}:{style}", "query": q, "reply": agent.clean(t)}
                  for q, t in zip(queries, texts, strict=True)]
    return items


def run_ooc(items: list[dict[str, str]], log: ResultLog, judge: Judge | None = None, user: str = "User") -> None:
    todo = []
    for it in items:
        rid = stable_id("ooc", it["character"], it["source"], it["query"], it["reply"])
        if not log.done(rid):
            todo.append((rid, it))
    if not todo:
        return
    calls = []
    if judge is not None:
        by_char: dict[str, list[int]] = {}
        for k, (_, it) in enumerate(todo):
            by_char.setdefault(it["character"], []).append(k)
        calls = [None] * len(todo)
        for ch, idx in by_char.items():
            for k, call in zip(idx, judge.out_of_character(ch, [(todo[k][1]["query"], todo[k][1]["reply"])
                                                                for k in idx], user), strict=True):
                calls[k] = call
    rows = []
    for k, (rid, it) in enumerate(todo):
        row: dict[str, Any] = {"id": rid, "kind": "ooc", **it,
                               "rules": list(ooc.check(it["reply"], it["character"], user).reasons)}
        if calls:
            row["judge"] = calls[k].to_dict()  # type: ignore[union-attr]
        rows.append(row)
    log.append(rows)


def ooc_report(log: ResultLog, wall_s: float | None = None, judge_name: str | None = None) -> rp.Report:
    rows = log.rows("ooc")
    for r in rows:  # the rules may have grown since the row was written: report with the current ones
        r["rules"] = list(ooc.check(r["reply"], r["character"]).reasons)
    rep = rp.Report("Out-of-character rate")
    sources = sorted({r["source"] for r in rows})
    rates = [rate_ci([bool(r["rules"]) for r in rows if r["source"] == s]) for s in sources]
    overall = rate_ci([bool(r["rules"]) for r in rows])
    rep.summary = [("replies checked", str(len(rows))), ("out of character (rules)", f"{overall.mean:.0%}"
                                                          if overall.n else "–")]
    if wall_s is not None:
        rep.summary.append(("wall time (this invocation)", f"{wall_s / 60:.1f} min"))
    reasons: dict[str, int] = {}
    for r in rows:
        for x in r["rules"]:
            reasons[x] = reasons.get(x, 0) + 1
    sec = rp.Section("Rate per source (rules)", table=(
        ["source", "replies", "out of character [95% CI]"],
        [[s, str(ci.n), ci.fmt()] for s, ci in zip(sources, rates, strict=True)]))
    if rows:
        sec.figures.append(rp.Figure("ooc-sources", rp.rate_bars(sources, rates, "Out-of-character rate (rules)",
                                                                 "share of replies"), "Per source, 95% intervals"))
    sec.paragraphs.append("Reasons: " + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items(),
                                                                                   key=lambda kv: -kv[1]))
                                         or "none") + ".")
    rep.sections.append(sec)
    judged = [r for r in rows if "judge" in r]
    if judged:
        ok = [r for r in judged if r["judge"]["ok"]]
        jrate = rate_ci([bool(r["judge"]["value"]) for r in ok])
        agree = sum(bool(r["judge"]["value"]) == bool(r["rules"]) for r in ok)
        rep.sections.append(rp.Section(f"LLM judge ({judge_name or 'judge'})", paragraphs=[
            f"Judged {len(judged)}, parse failures {len(judged) - len(ok)}; judge says out of character for "
            f"{jrate.fmt()} of the parsed ones; agrees with the rules on {agree}/{len(ok)}."]))
    flagged = [r for r in rows if r["rules"]][:12]
    rep.sections.append(rp.Section("Flagged replies", table=(
        ["source", "query", "reply", "reasons"],
        [[r["source"], r["query"], " ".join(r["reply"].split())[:220], ", ".join(r["rules"])] for r in flagged])))
    return rep
