"""Character-LLM style interviews judged by an LLM.

Single-turn: each question of an interview file `[{topic_id, topic, question}]` is asked in a fresh chat.
Multi-turn: a seed question opens a chat; an interviewer LLM reads the transcript and asks a follow-up, for
`rounds` answers in all. A judge LLM then scores every transcript 1-7 on memory, values, personality and
hallucination (anachronism) — and, multi-turn, stability — one call per dimension, reasoning first and ending
with `Score: N`. A judgement that does not end that way is a parse failure: counted per dimension, left out of
the means, never guessed. An interviewer that produces no usable question is replaced by a fixed follow-up
and counted too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import ooc
from ..agent import AgentConfig, RolePlayAgent
from ..errors import RolecraftError
from ..llm.base import LLM, Message
from . import prompts
from . import report as rp
from .common import Target, profile_excerpt
from .judge import Judge
from .stats import bootstrap_ci
from .store import ResultLog, stable_id


@dataclass
class InterviewConfig:
    mode: str = "rag"
    top_k: int = 5
    max_new_tokens: int = 64
    rounds: int = 3
    batch_size: int = 8
    seed: int = 0
    judge: str = "smollm2"
    judge_prime: bool = True
    judge_tokens: int = 128
    profile_chars: int = 900

    def settings(self) -> dict[str, Any]:
        return asdict(self)


def read_interview_file(path: Path) -> list[dict[str, str]]:
    """The Character-LLM question format: a JSON list of {topic_id, topic, question}."""
    path = Path(path)
    if not path.is_file():
        raise RolecraftError(f"Interview file not found: {path}")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RolecraftError(f"{path} is not JSON ({exc}).") from None
    if not isinstance(items, list) or not items:
        raise RolecraftError(f"{path} must be a non-empty JSON list of {{topic_id, topic, question}}.")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("question"), str) or not it["question"].strip():
            raise RolecraftError(f"{path}: item {i + 1} has no question text.")
        out.append({"topic_id": str(it.get("topic_id", "")), "topic": str(it.get("topic", "")),
                    "question": it["question"].strip()})
    return out


def parse_question(text: str) -> str | None:
    """The interviewer's question: the first line, labels and quotes removed, cut after its question mark."""
    for line in (text or "").splitlines():
        line = re.sub(r"^\s*(\d+[.)]\s*|[-*]\s*)?(\*\*)?(interviewer|journalist|question|q|me)\s*(\*\*)?\s*[:：]\s*",
                      "", line.strip(), flags=re.IGNORECASE).strip().strip('"“”').strip()
        if not line:
            continue
        if "?" not in line:
            return None
        q = line[: line.index("?") + 1].strip()
        return q if 8 <= len(q) <= 300 else None
    return None


def transcript(name: str, turns: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"Interviewer: {q}\n{name}: {a}" for q, a in turns)


def _agent(target: Target, llm: LLM, cfg: InterviewConfig) -> RolePlayAgent:
    return RolePlayAgent(target.character, llm, AgentConfig(mode=cfg.mode, top_k=cfg.top_k,  # type: ignore[arg-type]
                                                            max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                                                            user_name="Interviewer", seed=cfg.seed))


def run_single(target: Target, llm: LLM, judge: Judge, questions: list[dict[str, str]], cfg: InterviewConfig,
               log: ResultLog, progress: bool = True) -> None:
    from tqdm import tqdm

    c = target.character
    profile = profile_excerpt(c, cfg.profile_chars)
    todo = [q for q in questions if not log.done(stable_id("single", c.slug, q["question"]))]
    agent = _agent(target, llm, cfg)
    bar = tqdm(total=len(todo), desc="single-turn", unit="question", disable=not progress or not todo)
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        t0 = time.perf_counter()
        prepared = [agent.prepare(q["question"]) for q in chunk]  # fresh chat per question: nothing committed
        answers = [agent.clean(x) for x in llm.chat_batch([p[0] for p in prepared], **prepared[0][3])]
        scores = judge.score_dimensions(c.name, profile, [transcript(c.name, [(q["question"], a)])
                                                          for q, a in zip(chunk, answers, strict=True)],
                                        prompts.SINGLE_DIMENSIONS)
        share = (time.perf_counter() - t0) / len(chunk)
        log.append([{"id": stable_id("single", c.slug, q["question"]), "kind": "single", "character": c.name,
                     **q, "answer": a, "ooc": list(ooc.check(a, c.name, "Interviewer").reasons),
                     "scores": {d: call.to_dict() for d, call in s.items()}, "seconds": round(share, 3)}
                    for q, a, s in zip(chunk, answers, scores, strict=True)])
        bar.update(len(chunk))
    bar.close()


def run_multi(target: Target, llm: LLM, interviewer: LLM, judge: Judge, seeds: list[dict[str, str]],
              cfg: InterviewConfig, log: ResultLog, progress: bool = True) -> None:
    from tqdm import tqdm

    c = target.character
    profile = profile_excerpt(c, cfg.profile_chars)
    todo = [q for q in seeds if not log.done(stable_id("multi", c.slug, q["question"], cfg.rounds))]
    bar = tqdm(total=len(todo) * cfg.rounds, desc="multi-turn", unit="answer", disable=not progress or not todo)
    for start in range(0, len(todo), cfg.batch_size):
        chunk = todo[start : start + cfg.batch_size]
        t0 = time.perf_counter()
        agents = [_agent(target, llm, cfg) for _ in chunk]
        asked = [q["question"] for q in chunk]
        turns: list[list[tuple[str, str]]] = [[] for _ in chunk]
        fallbacks = [0] * len(chunk)
        for r in range(cfg.rounds):
            prepared = [a.prepare(q) for a, q in zip(agents, asked, strict=True)]
            answers = [a.clean(x) for a, x in zip(agents, llm.chat_batch([p[0] for p in prepared],
                                                                          **prepared[0][3]), strict=True)]
            for i, (a, p, q, ans) in enumerate(zip(agents, prepared, asked, answers, strict=True)):
                a.commit(q, ans, p[1], p[0], p[2])
                turns[i].append((q, ans))
            bar.update(len(chunk))
            if r == cfg.rounds - 1:
                break
            convs: list[list[Message]] = [[
                {"role": "system", "content": prompts.INTERVIEWER_SYSTEM.format(name=c.name)},
                {"role": "user", "content": prompts.INTERVIEWER_TEMPLATE.format(
                    name=c.name, transcript=transcript(c.name, t))}] for t in turns]
            raw = interviewer.chat_batch(convs, temperature=0.0, max_new_tokens=48)
            asked = []
            for i, text in enumerate(raw):
                q = parse_question(text)
                if q is None:
                    fallbacks[i] += 1
                asked.append(q or prompts.FALLBACK_FOLLOW_UP)
        scores = judge.score_dimensions(c.name, profile, [transcript(c.name, t) for t in turns],
                                        prompts.MULTI_DIMENSIONS)
        share = (time.perf_counter() - t0) / len(chunk)
        log.append([{"id": stable_id("multi", c.slug, q["question"], cfg.rounds), "kind": "multi",
                     "character": c.name, **q, "rounds": cfg.rounds,
                     "turns": [{"question": a, "answer": b} for a, b in t], "interviewer_fallbacks": f,
                     "ooc": [list(ooc.check(b, c.name, "Interviewer").reasons) for _, b in t],
                     "scores": {d: call.to_dict() for d, call in s.items()}, "seconds": round(share, 3)}
                    for q, t, f, s in zip(chunk, turns, fallbacks, scores, strict=True)])
    bar.close()


# -- the report ----------------------------------------------------------------------------------------------
def summarize(rows: list[dict[str, Any]], dimensions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per dimension: the interval of parsed scores and the parse-failure count."""
    out = {}
    for d in dimensions:
        calls = [r["scores"][d] for r in rows if d in r.get("scores", {})]
        vals = [float(x["value"]) for x in calls if x["ok"]]
        out[d] = {"ci": bootstrap_ci(vals), "failures": len(calls) - len(vals), "calls": len(calls)}
    return out


def build_report(log: ResultLog, target: Target, cfg: InterviewConfig, wall_s: float | None = None,
                 served: bool = False) -> rp.Report:
    c = target.character
    single = [r for r in log.rows("single") if r["character"] == c.name]
    multi = [r for r in log.rows("multi") if r["character"] == c.name]
    s_sum, m_sum = summarize(single, prompts.SINGLE_DIMENSIONS), summarize(multi, prompts.MULTI_DIMENSIONS)
    calls = sum(v["calls"] for v in s_sum.values()) + sum(v["calls"] for v in m_sum.values())
    fails = sum(v["failures"] for v in s_sum.values()) + sum(v["failures"] for v in m_sum.values())
    rep = rp.Report(f"Interview of {c.name}")
    rep.summary = [("single-turn questions", str(len(single))), ("multi-turn seeds", f"{len(multi)} × {cfg.rounds} "
                                                                                     "rounds"),
                   ("judge", cfg.judge + (" (served, OpenAI API)" if served else "")),
                   ("judge parse failures", f"{fails}/{calls} ({fails / calls:.0%})" if calls else "–")]
    if wall_s is not None:
        rep.summary.append(("wall time (this invocation)", f"{wall_s / 60:.1f} min"))
    dims = list(prompts.MULTI_DIMENSIONS)
    table_rows = []
    for d in dims:
        s, m = s_sum.get(d), m_sum.get(d)
        table_rows.append([d, s["ci"].fmt() if s else "–", f"{s['failures']}/{s['calls']}" if s else "–",
                           m["ci"].fmt() if m else "–", f"{m['failures']}/{m['calls']}" if m else "–"])
    sec = rp.Section("Judge scores per dimension (1–7)", table=(
        ["dimension", "single-turn mean [95% CI]", "single parse failures", "multi-turn mean [95% CI]",
         "multi parse failures"], table_rows))
    series = {}
    if single:
        series["single-turn"] = [s_sum[d]["ci"] if d in s_sum else bootstrap_ci([]) for d in dims]
    if multi:
        series["multi-turn"] = [m_sum[d]["ci"] for d in dims]
    if series:
        sec.figures.append(rp.Figure("interview-bars", rp.bars_with_intervals(
            dims, series, "judge score (1-7)", "Mean judge score per dimension (95% bootstrap intervals)"),
            "Mean score per dimension; parse failures are left out"))
        sec.figures.append(rp.Figure("interview-radar", rp.radar(
            dims, {k: [x.mean if x.n else float("nan") for x in v] for k, v in series.items()}, "Profile of scores"),
            "The same means as a radar"))
    sec.paragraphs.append("Each transcript is judged once per dimension; the judge must reason and end with "
                          "`Score: N`. Replies that do not end so are parse failures, counted here and left out.")
    rep.sections.append(sec)

    topics: dict[str, list[float]] = {}
    for r in single:
        vals = [float(x["value"]) for x in r["scores"].values() if x["ok"]]
        topics.setdefault(r["topic"] or r["topic_id"] or "?", []).extend(vals)
    if topics:
        rep.sections.append(rp.Section("Single-turn by topic", table=(
            ["topic", "questions", "mean score [95% CI]"],
            [[t, str(sum(1 for r in single if (r["topic"] or r["topic_id"] or "?") == t)), bootstrap_ci(v).fmt()]
             for t, v in sorted(topics.items())])))
    ooc_single = sum(bool(r["ooc"]) for r in single)
    ooc_multi = sum(bool(x) for r in multi for x in r["ooc"])
    n_multi = sum(len(r["ooc"]) for r in multi)
    fb = sum(r["interviewer_fallbacks"] for r in multi)
    para = [f"Out of character (rules): {ooc_single}/{len(single)} single-turn answers, {ooc_multi}/{n_multi} "
            "multi-turn answers."]
    if multi:
        para.append(f"The interviewer failed to produce a usable follow-up question {fb} times out of "
                    f"{len(multi) * (cfg.rounds - 1)}; a fixed follow-up was asked instead.")
    ex = [[r["question"], _short(r["answer"]), " ".join(f"{d[:4]}={x['value'] if x['ok'] else '✗'}"
                                                        for d, x in r["scores"].items())] for r in single[:8]]
    rep.sections.append(rp.Section("Examples (single-turn)", paragraphs=para, table=(
        ["question", "answer", "scores (✗ = parse failure)"], ex)))
    if multi:
        mt = [[str(i + 1), t["question"], _short(t["answer"])] for i, t in enumerate(multi[0]["turns"])]
        rep.sections.append(rp.Section(f"Example multi-turn interview (seed: {multi[0]['question']})", table=(
            ["round", "question", "answer"], mt)))
    rep.notes.append(
        "How far to trust this judge: a 135M model judging role-play is a smoke test of the pipeline, not a "
        "measurement. It barely follows the output format (see the parse failures), its scores cluster and do not "
        "track answer quality reliably, and it cannot know the character's biography beyond the profile excerpt "
        "it is given. For real numbers plug in a strong judge through any OpenAI-compatible endpoint "
        "(`--judge-backend openai --judge-model <model> --judge-base-url <url>`, e.g. GPT-4o-class or a 70B "
        "open model served by vLLM), and check a sample of its judgements by hand.")
    rep.notes.append("Character-LLM profiles and interview questions are CC BY-NC 4.0 (non-commercial).")
    return rep


def _short(text: str, limit: int = 220) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
