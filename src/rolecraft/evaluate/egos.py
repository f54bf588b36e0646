"""The EGOS tests: memory, consistency and quality.

memory       the user states a fact in turn 1, `fillers` turns of small talk follow, then the fact is asked
             back. Recall = one of the expected words appears in the answer (a plain string check, no judge).
             Run twice: with a prompt budget large enough to keep every turn ("full history"), and with a budget
             so small that the fact's turn must be folded into the running summary ("forced summarisation").
consistency  a judge sees a real line of the character (from its example dialogues, or first-person quoted
             speech in its profile) and a generated one, in both orders, and must say which is real. The rate
             at which it picks the generated line is the rate it is fooled (0.5 = indistinguishable).
quality      a judge compares the replies of two systems to the same queries, each pair in both orders so
             position bias cancels; a system wins a query when it is preferred in both orders.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..agent import AgentConfig, RolePlayAgent
from ..character import Character
from ..errors import RolecraftError
from ..llm.base import LLM
from . import prompts
from . import report as rp
from .common import Target
from .judge import Judge
from .stats import rate_ci
from .store import ResultLog, stable_id

CONDITIONS = ("full", "summarised")


# -- memory -------------------------------------------------------------------------------------------------
@dataclass
class MemoryConfig:
    fillers: int = 2  # small-talk turns between the fact and the question (k)
    mode: str = "rag"
    top_k: int = 5
    max_new_tokens: int = 40
    keep_recent: int = 1  # with forced summarisation only the last turn stays verbatim
    margin: int = 8  # forced condition: prompt budget = the bare prompt's tokens + less than any turn
    full_budget: int = 6000  # full condition: room for every turn
    batch_size: int = 10
    seed: int = 0

    def settings(self) -> dict[str, Any]:
        return asdict(self)


def recalled(reply: str, expected: tuple[str, ...]) -> bool:
    text = reply.lower()
    return any(w.lower() in text for w in expected)


def run_memory(target: Target, llm: LLM, cfg: MemoryConfig, log: ResultLog, conditions: tuple[str, ...] = CONDITIONS,
               limit: int | None = None, progress: bool = True) -> None:
    """Every (condition, probe) as one scripted chat; chats of a batch advance turn by turn together."""
    from tqdm import tqdm

    c = target.character
    probes = prompts.MEMORY_PROBES[:limit] if limit else prompts.MEMORY_PROBES
    fillers = [prompts.MEMORY_FILLERS[i % len(prompts.MEMORY_FILLERS)] for i in range(cfg.fillers)]
    items = [(cond, i, p) for cond in conditions for i, p in enumerate(probes)
             if not log.done(stable_id("memory", c.slug, cond, p[0], cfg.fillers))]
    bar = tqdm(total=len(items), desc="memory chats", unit="chat", disable=not progress or not items)
    for start in range(0, len(items), cfg.batch_size):
        chunk = items[start : start + cfg.batch_size]
        t0 = time.perf_counter()
        agents = [_memory_agent(c, llm, cfg, cond, p[1]) for cond, _, p in chunk]
        scripts = [[p[0], *fillers, p[1]] for _, _, p in chunk]
        replies: list[str] = []
        for k in range(len(scripts[0])):
            prepared = [a.prepare(s[k]) for a, s in zip(agents, scripts, strict=True)]
            texts = llm.chat_batch([p[0] for p in prepared], **prepared[0][3])
            replies = []
            for a, s, p, t in zip(agents, scripts, prepared, texts, strict=True):
                reply = a.clean(t)
                a.commit(s[k], reply, p[1], p[0], p[2])
                replies.append(reply)
        share = (time.perf_counter() - t0) / len(chunk)
        rows = []
        for (cond, _i, p), a, reply in zip(chunk, agents, replies, strict=True):
            # was the fact's turn still verbatim in the prompt of the question (the last turn is the question)?
            verbatim = any(t.user == p[0] for t in a.memory.recent[:-1])
            rows.append({"id": stable_id("memory", c.slug, cond, p[0], cfg.fillers), "kind": "memory",
                         "character": c.name, "condition": cond, "fact": p[0], "question": p[1],
                         "expected": list(p[2]), "reply": reply, "recalled": recalled(reply, p[2]),
                         "summaries": a.memory.summaries, "summary": a.memory.summary,
                         "fact_verbatim_in_prompt": verbatim,
                         "fact_word_in_summary": recalled(a.memory.summary, p[2]),
                         "turns": [{"user": t.user, "reply": t.reply} for t in a.memory.log],
                         "seconds": round(share, 3)})
        log.append(rows)
        bar.update(len(chunk))
    bar.close()


def _memory_agent(c: Character, llm: LLM, cfg: MemoryConfig, condition: str, question: str) -> RolePlayAgent:
    agent = RolePlayAgent(c, llm, AgentConfig(mode=cfg.mode, top_k=cfg.top_k,  # type: ignore[arg-type]
                                              max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                                              keep_recent=cfg.keep_recent, context_budget=cfg.full_budget,
                                              seed=cfg.seed))
    if condition == "summarised":
        # the bare prompt of the final question, plus a margin smaller than one turn: the fact cannot stay verbatim
        bare = llm.count_tokens(agent.build_messages(question, agent.select_statements(question)))
        agent.config.context_budget = bare + cfg.margin
    elif condition != "full":
        raise RolecraftError(f"Unknown memory condition {condition!r}; use {', '.join(CONDITIONS)}.")
    return agent


def memory_report(log: ResultLog, target: Target, cfg: MemoryConfig, wall_s: float | None = None) -> rp.Report:
    c = target.character
    rows = [r for r in log.rows("memory") if r["character"] == c.name]
    rep = rp.Report(f"EGOS memory test: {c.name}")
    by = {cond: [r for r in rows if r["condition"] == cond] for cond in CONDITIONS}
    rates = {cond: rate_ci([r["recalled"] for r in rs]) for cond, rs in by.items()}
    rep.summary = [(f"recall, {'full history' if k == 'full' else 'forced summarisation'}",
                    f"{v.mean:.0%} ({sum(r['recalled'] for r in by[k])}/{v.n})" if v.n else "–")
                   for k, v in rates.items()]
    rep.summary.append(("small-talk turns between fact and question", str(cfg.fillers)))
    if wall_s is not None:
        rep.summary.append(("wall time (this invocation)", f"{wall_s / 60:.1f} min"))
    labels = {"full": "full history in the prompt", "summarised": "forced summarisation"}
    sec = rp.Section("Recall rate", table=(
        ["condition", "recall [95% CI]", "chats", "summaries made (mean)", "fact word kept in summary"],
        [[labels[k], rates[k].fmt(), str(rates[k].n),
          f"{sum(r['summaries'] for r in by[k]) / max(1, len(by[k])):.1f}",
          f"{sum(r['fact_word_in_summary'] for r in by[k])}/{len(by[k])}" if k == "summarised" else "–"]
         for k in CONDITIONS if by[k]]))
    sec.figures.append(rp.Figure("memory-recall", rp.rate_bars(
        [labels[k] for k in CONDITIONS if by[k]], [rates[k] for k in CONDITIONS if by[k]],
        "Recall of a fact given earlier in the chat", "recall rate"), "Recall with 95% bootstrap intervals"))
    sec.paragraphs.append(
        f"The user states a fact, {cfg.fillers} turns of small talk follow, then the fact is asked back; recall means "
        "an expected word (e.g. the name) appears in the answer. Under forced summarisation the prompt budget is the "
        f"bare prompt plus {cfg.margin} tokens and only the last turn is kept verbatim, so the fact survives only "
        "if the summary kept it (the last column).")
    rep.sections.append(sec)
    order = {p[0]: i for i, p in enumerate(prompts.MEMORY_PROBES)}  # each fact's chats side by side
    shown = sorted(rows, key=lambda r: (order.get(r["fact"], len(order)), r["condition"]))[:12]
    ex = [[labels[r["condition"]], r["fact"], r["question"], _short(r["reply"]), "yes" if r["recalled"] else "no",
           _short(r["summary"]) or "–"] for r in shown]
    rep.sections.append(rp.Section("Chats", table=(["condition", "fact", "question", "answer", "recalled",
                                                    "summary at the end"], ex)))
    rep.notes.append("The facts are rolecraft's own scripted probes (prompts.MEMORY_PROBES); answers are checked "
                     "by string match, so a paraphrase (\"your sister O.\") counts as a miss.")
    return rep


# -- consistency ----------------------------------------------------------------------------------------------
_QUOTE = re.compile(r"[\"“]([^\"”]{30,300})[\"”]")
_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'll|me|my|we|our|us)\b")


def real_lines(c: Character, limit: int | None = None) -> list[str]:
    """Lines the character really says: its example dialogues and greeting (cards), else first-person quoted
    speech in the profile (a heuristic: a quote in a wiki may be someone else's)."""
    lines: list[str] = []
    names = {c.name, c.name.split()[0], "{{char}}"}
    for ex in c.examples:
        for ln in ex.splitlines():
            head, _, text = ln.partition(":")
            if head.strip() in names and len(text.split()) >= 5:
                lines.append(text.strip())
    if c.greeting and len(c.greeting.split()) >= 5:
        lines.append(re.sub(r"\*[^*]*\*", "", c.greeting).strip())
    if not lines:
        for p in c.passages:
            lines += [m.group(1).strip() for m in _QUOTE.finditer(p)
                      if len(m.group(1).split()) >= 6 and _FIRST_PERSON.search(m.group(1))]
    lines = list(dict.fromkeys(x for x in lines if x))
    return lines[:limit] if limit else lines


def run_consistency(target: Target, llm: LLM, judge: Judge, log: ResultLog, limit: int | None = None,
                    max_new_tokens: int = 48, progress: bool = True) -> None:
    c = target.character
    reals = real_lines(c, limit)
    if not reals:
        raise RolecraftError(f"No real lines of {c.name} found (no example dialogues and no first-person quotes "
                             "in the profile); the consistency test needs some.")
    todo = [(i, r) for i, r in enumerate(reals) if not log.done(stable_id("consistency", c.slug, r))]
    if not todo:
        return
    t0 = time.perf_counter()
    agent = RolePlayAgent(c, llm, AgentConfig(mode="rag", max_new_tokens=max_new_tokens, temperature=0.0))
    asks = [prompts.CONSISTENCY_PROMPTS[i % len(prompts.CONSISTENCY_PROMPTS)] for i, _ in todo]
    prepared = [agent.prepare(q) for q in asks]
    gens = [agent.clean(x) for x in llm.chat_batch([p[0] for p in prepared], **prepared[0][3])]
    pairs = []
    for (_, real), gen in zip(todo, gens, strict=True):
        pairs += [(real, gen), (gen, real)]  # real first, then generated first
    calls = judge.pick_real(c.name, pairs)
    share = (time.perf_counter() - t0) / len(todo)
    rows = []
    for k, ((_, real), gen, ask) in enumerate(zip(todo, gens, asks, strict=True)):
        first, second = calls[2 * k], calls[2 * k + 1]
        rows.append({"id": stable_id("consistency", c.slug, real), "kind": "consistency", "character": c.name,
                     "real": real, "generated": gen, "prompt": ask,
                     "judgements": [{"order": "real first", **first.to_dict(),
                                     "fooled": None if not first.ok else first.value == "B"},
                                    {"order": "generated first", **second.to_dict(),
                                     "fooled": None if not second.ok else second.value == "A"}],
                     "seconds": round(share, 3)})
    log.append(rows)


# -- quality ----------------------------------------------------------------------------------------------------
def parse_system(spec: str) -> tuple[str, str]:
    """'rag', 'all:quote', 'none:chat' -> (mode, style)."""
    mode, _, style = spec.partition(":")
    style = style or "chat"
    if mode not in ("rag", "all", "none") or style not in ("chat", "quote"):
        raise RolecraftError(f"A system is mode[:style] with mode rag|all|none and style chat|quote, not {spec!r}.")
    return mode, style


def run_quality(target: Target, llm: LLM, judge: Judge, systems: tuple[str, str], queries: list[str],
                log: ResultLog, max_new_tokens: int = 48, progress: bool = True) -> None:
    c = target.character
    todo = [q for q in queries if not log.done(stable_id("quality", c.slug, *systems, q))]
    if not todo:
        return
    t0 = time.perf_counter()
    replies = []
    for spec in systems:
        mode, style = parse_system(spec)
        agent = RolePlayAgent(c, llm, AgentConfig(mode=mode, style=style, max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
                                                  temperature=0.0))
        prepared = [agent.prepare(q) for q in todo]
        replies.append([agent.clean(x) for x in llm.chat_batch([p[0] for p in prepared], **prepared[0][3])])
    items = []
    for q, a, b in zip(todo, replies[0], replies[1], strict=True):
        items += [(q, a, b), (q, b, a)]  # system 1 as A, then system 1 as B
    calls = judge.pick_better(c.name, items)
    share = (time.perf_counter() - t0) / len(todo)
    rows = []
    for k, (q, a, b) in enumerate(zip(todo, replies[0], replies[1], strict=True)):
        first, second = calls[2 * k], calls[2 * k + 1]
        prefs = [None if not first.ok else ("1" if first.value == "A" else "2"),
                 None if not second.ok else ("1" if second.value == "B" else "2")]
        rows.append({"id": stable_id("quality", c.slug, *systems, q), "kind": "quality", "character": c.name,
                     "systems": list(systems), "query": q, "reply_1": a, "reply_2": b,
                     "judgements": [{"order": "1 as A", **first.to_dict()}, {"order": "1 as B", **second.to_dict()}],
                     "prefers": prefs,
                     "winner": prefs[0] if prefs[0] is not None and prefs[0] == prefs[1] else "tie",
                     "seconds": round(share, 3)})
    log.append(rows)


def judge_report(log: ResultLog, target: Target, judge_name: str, wall_s: float | None = None) -> rp.Report:
    """The consistency and quality results found in the log."""
    c = target.character
    rep = rp.Report(f"EGOS judge tests: {c.name}")
    if wall_s is not None:
        rep.summary.append(("wall time (this invocation)", f"{wall_s / 60:.1f} min"))
    rep.summary.append(("judge", judge_name))
    cons = [r for r in log.rows("consistency") if r["character"] == c.name]
    if cons:
        js = [j for r in cons for j in r["judgements"]]
        parsed = [j for j in js if j["ok"]]
        fooled = rate_ci([bool(j["fooled"]) for j in parsed])
        picks_a = sum(j["value"] == "A" for j in parsed)
        rep.summary.append(("fooled rate", f"{fooled.mean:.0%}" if fooled.n else "–"))
        sec = rp.Section("Consistency: can the judge tell the real line from the generated one?", table=(
            ["pairs", "judgements", "parse failures", "fooled rate [95% CI]", "picked position A"],
            [[str(len(cons)), str(len(js)), f"{len(js) - len(parsed)}", fooled.fmt(),
              f"{picks_a}/{len(parsed)}" if parsed else "–"]]))
        sec.paragraphs.append("Each pair is judged twice (real line first, then generated first). Fooled = the judge "
                              "picked the generated line; 50% means it cannot tell them apart, and a judge that "
                              "always picks one position is fooled exactly half the time, so read it with the "
                              "position column.")
        if fooled.n:
            sec.figures.append(rp.Figure("consistency", rp.rate_bars(["fooled", "picked position A"], [
                fooled, rate_ci([j["value"] == "A" for j in parsed])], "Consistency test", "share of judgements"),
                "Fooled rate and position bias"))
        rep.sections.append(sec)
        rep.sections.append(rp.Section("Consistency pairs", table=(
            ["real line", "generated line", "judge (real first / generated first)"],
            [[_short(r["real"]), _short(r["generated"]), " / ".join(
                str(j["value"]) if j["ok"] else "✗" for j in r["judgements"])] for r in cons[:10]])))
    qual = [r for r in log.rows("quality") if r["character"] == c.name]
    if qual:
        systems = qual[0]["systems"]
        prefs = [p for r in qual for p in r["prefers"] if p is not None]
        fails = sum(p is None for r in qual for p in r["prefers"])
        win1 = rate_ci([p == "1" for p in prefs])
        wins = {w: sum(r["winner"] == w for r in qual) for w in ("1", "2", "tie")}
        rep.summary.append((f"{systems[0]} preferred", f"{win1.mean:.0%}" if win1.n else "–"))
        sec = rp.Section(f"Quality: {systems[0]} vs {systems[1]}", table=(
            ["queries", "judgements parsed", "parse failures", f"{systems[0]} preferred [95% CI]",
             f"{systems[0]} wins both orders", f"{systems[1]} wins both orders", "order-dependent (tie)"],
            [[str(len(qual)), str(len(prefs)), str(fails), win1.fmt(), str(wins["1"]), str(wins["2"]),
              str(wins["tie"])]]))
        sec.paragraphs.append("Every query is judged twice with the replies swapped, so a judge that prefers a "
                              "position cannot favour either system; a win needs the same verdict in both orders.")
        if win1.n:
            sec.figures.append(rp.Figure("quality", rp.rate_bars(
                [f"{systems[0]} preferred"], [win1], "Pairwise quality", "share of judgements"),
                "Share of judgements preferring the first system"))
        rep.sections.append(sec)
    rep.notes.append("A 135M judge is far too weak for these tests: expect near-chance choices and many parse "
                     "failures. Use a strong judge (--judge-backend openai ...) for numbers worth reading.")
    return rep


def _short(text: str, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
