"""APC-based preference pairs: sample replies, score each over all statements, pair best against worst.

The refusal guard: a reply that breaks character (assistant voice, third-person narration, lines for
the user; see `rolecraft.ooc`) is never the chosen side. With `ooc="reject"` it becomes the rejected
side of a pair against the best in-character reply, whatever the margin (breaking character is the
worst failure); with `ooc="drop"` it is left out. The APC sample data of the paper has refusals as
"chosen" replies: the discriminators alone cannot be trusted to rank them low.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ooc
from ..errors import RolecraftError
from ..paths import atomic_write_text


@dataclass
class PairConfig:
    candidates: int = 4  # replies sampled per query
    temperature: float = 0.9  # diverse candidates; the pair needs a spread of scores
    top_p: float = 0.95
    max_new_tokens: int = 48
    margin: float = 0.5  # minimum APC difference (summed over statements) between chosen and rejected
    ooc: str = "reject"  # "reject": an out-of-character reply is the rejected side; "drop": leave it out
    batch_size: int = 16  # rows generated together
    max_pairs: int | None = None
    seed: int = 0


def query_key(query: str, seed: int = 0) -> str:
    return hashlib.sha256(f"{seed}:{query}".encode()).hexdigest()


def split_queries(queries: list[str], heldout: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out): a fixed function of the query set, so reruns evaluate on the same queries."""
    unique = list(dict.fromkeys(q.strip() for q in queries if q and q.strip()))
    ranked = sorted(unique, key=lambda q: query_key(q, seed))
    if heldout >= len(ranked):
        raise RolecraftError(f"{len(ranked)} queries are too few to hold out {heldout} and still train on some; "
                             "make more (`rolecraft synth queries CHARACTER`) or lower heldout.")
    held = set(ranked[:heldout])
    return [q for q in unique if q not in held], [q for q in unique if q in held]


def read_queries(folder: Path, extra: list[Path] | None = None) -> list[str]:
    """The character's synthesised queries (datasets/queries.jsonl) and any extra files of queries.

    An extra file is JSON Lines or a JSON list; each item a string or an object with "query" or "question".
    """
    rows: list[Any] = []
    main = Path(folder) / "datasets" / "queries.jsonl"
    paths = ([main] if main.is_file() else []) + list(extra or [])
    for path in paths:
        if not Path(path).is_file():
            raise RolecraftError(f"Queries file not found: {path}")
        text = Path(path).read_text(encoding="utf-8")
        try:
            if text.lstrip().startswith("["):
                rows += json.loads(text)
            else:
                rows += [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise RolecraftError(f"{path}: not JSON Lines or a JSON list ({exc})") from None
    out = []
    for r in rows:
        q = r if isinstance(r, str) else (r.get("query") or r.get("question")) if isinstance(r, dict) else None
        if isinstance(q, str) and q.strip():
            out.append(q.strip())
    return list(dict.fromkeys(out))


def sample_candidates(agent: Any, queries: list[str], cfg: PairConfig, progress: bool = True) -> list[dict[str, Any]]:
    """`cfg.candidates` replies per query from the agent's model, generated in batches."""
    from tqdm import tqdm

    jobs = []  # (query, prompt messages, statements shown, sampling)
    for q in queries:
        msgs, shown, _, sampling = agent.prepare(q)
        jobs += [(q, msgs, shown, sampling)] * cfg.candidates
    replies: list[str] = []
    bar = tqdm(total=len(jobs), desc="candidates", unit="reply", disable=not progress)
    for start in range(0, len(jobs), cfg.batch_size):
        chunk = jobs[start : start + cfg.batch_size]
        sampling = dict(chunk[0][3], temperature=cfg.temperature, top_p=cfg.top_p,
                        max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + start)
        out = agent.llm.chat_batch([j[1] for j in chunk], **sampling)
        replies += [agent.clean(r) for r in out]
        bar.update(len(chunk))
    bar.close()
    by_query: dict[str, dict[str, Any]] = {}
    for (q, msgs, shown, _), reply in zip(jobs, replies, strict=True):
        entry = by_query.setdefault(q, {"query": q, "prompt": msgs, "statements": shown, "replies": []})
        entry["replies"].append(reply)
    return list(by_query.values())


def score_candidates(groups: list[dict[str, Any]], scorer: Any, statements: list[str], character: str,
                     user: str = "User", progress: bool = True) -> list[dict[str, Any]]:
    """Add APC over all statements and the out-of-character verdict to every candidate."""
    from tqdm import tqdm

    for g in tqdm(groups, desc="APC", unit="query", disable=not progress):
        scores = scorer.score(statements, g["query"], g["replies"], character=character)
        g["candidates"] = [{"reply": r, "apc": float(s), "ooc": list(ooc.check(r, character, user).reasons)}
                           for r, s in zip(g["replies"], scores, strict=True)]
    return groups


def make_pairs(groups: list[dict[str, Any]], cfg: PairConfig) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Best in-character reply against the worst (an out-of-character one first, with ooc='reject')."""
    pairs, skipped = [], {"all out of character": 0, "margin too small": 0, "one distinct reply": 0}
    for g in groups:
        cands = {c["reply"]: c for c in g["candidates"]}.values()  # identical replies teach nothing
        good = sorted((c for c in cands if not c["ooc"]), key=lambda c: c["apc"], reverse=True)
        bad = sorted((c for c in cands if c["ooc"]), key=lambda c: c["apc"])
        if not good:
            skipped["all out of character"] += 1
            continue
        chosen = good[0]
        if cfg.ooc == "reject" and bad:
            rejected = bad[0]
        elif len(good) > 1:
            rejected = good[-1]
            if chosen["apc"] - rejected["apc"] < cfg.margin:
                skipped["margin too small"] += 1
                continue
        else:
            skipped["one distinct reply"] += 1
            continue
        pairs.append({
            "id": hashlib.sha256(f"{g['query']}\0{chosen['reply']}\0{rejected['reply']}".encode()).hexdigest()[:16],
            "query": g["query"], "prompt": g["prompt"],
            "chosen": chosen["reply"], "rejected": rejected["reply"],
            "chosen_apc": chosen["apc"], "rejected_apc": rejected["apc"],
            "margin": chosen["apc"] - rejected["apc"], "rejected_ooc": rejected["ooc"],
        })
    if cfg.max_pairs is not None and len(pairs) > cfg.max_pairs:
        # keep the clearest preferences: out-of-character rejections, then the widest margins
        pairs.sort(key=lambda p: (bool(p["rejected_ooc"]), p["margin"]), reverse=True)
        pairs = pairs[: cfg.max_pairs]
    random.Random(cfg.seed).shuffle(pairs)
    return pairs, skipped


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
