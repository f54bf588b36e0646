"""How fast APC scoring is: batched scorer vs. a naive per-pair loop, 600 statements, two-stage retrieval.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_apc.py [--statements 600] [--device cpu] [--dtype auto]

Both paths use the same two models in the same dtype ("auto": bfloat16 where the hardware has it).

Persona statements are sentences of the character profiles in ../shared/data/characters (only read,
never shipped); synthetic sentences fill in when that folder is absent.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rolecraft.apc import APCScorer
from rolecraft.retrieval import EmbeddingRetriever

CHARACTERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "characters"
QUERIES = [
    "Where do you live?",
    "What do you do for fun?",
    "Who is your family?",
    "What music do you like?",
    "Tell me about your childhood.",
    "What are you afraid of?",
    "What did you study?",
    "Do you have any pets?",
]
REPLIES = [
    "I live in a quiet house by the lake with my sister.",
    "Mostly I read and play the piano when nobody is watching.",
    "My father was a baker and my mother taught at the village school.",
    "I never liked music much, honestly.",
    "I grew up in the city and moved away when I was twenty.",
    "Nothing scares me, except maybe deep water.",
    "I studied physics, though I left before finishing.",
    "I have a black cat called Pepper.",
]


def load_statements(n: int) -> list[str]:
    """`n` persona-like sentences (real profile sentences where available)."""
    sentences: list[str] = []
    for path in sorted(CHARACTERS.glob("*/wiki_*.txt")) if CHARACTERS.is_dir() else []:
        text = path.read_text(encoding="utf-8")
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            if 6 <= len(words) <= 40 and sentence.isascii():
                sentences.append(" ".join(words))
    i = 0
    while len(sentences) < n:  # synthetic filler
        sentences.append(f"The character keeps habit number {i} and talks about topic {i % 17} every week.")
        i += 1
    return sentences[:n]


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` runs (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def naive_scores(scorer: APCScorer, statements: list[str], query: str, replies: list[str]) -> list[float]:
    """One statement and one forward pass at a time, relevance recomputed for every reply."""
    rel, nli = scorer.relevance, scorer.nli
    i_rel = rel.labels.index("relevant")
    i_ent, i_con = nli.labels.index("entailed"), nli.labels.index("contradicted")
    totals = []
    for reply in replies:
        total = 0.0
        for statement in statements:
            p_rel = rel.predict_proba([{"statement": statement, "query": query}], batch_size=1)[0, i_rel]
            p = nli.predict_proba(
                [{"statement": statement, "query": query, "response": reply}], batch_size=1
            )[0]
            total += (1 - p_rel) * (1 - p[i_con]) + p_rel * p[i_ent]
        totals.append(float(total))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=600)
    parser.add_argument("--pair-statements", type=int, default=40, help="statements in the throughput test")
    parser.add_argument("--replies", type=int, default=8)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass of the scorer")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scorer = APCScorer.pretrained(device=args.device, dtype=args.dtype)
    scorer.batch_size = args.batch_size
    print(
        f"device {scorer.nli.device_name}, dtype {str(scorer.nli.dtype).removeprefix('torch.')}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}"
    )
    statements = load_statements(args.statements)
    query, replies = QUERIES[0], REPLIES[: args.replies]
    subset = statements[: args.pair_statements]
    scorer.score(subset[:4], query, replies[:2])  # warm-up (merges LoRA, first allocations)

    # 1. Throughput on the same (statement, reply) pairs.
    n_pairs = len(subset) * len(replies)
    batched = timed(lambda: scorer.score(subset, query, replies), repeat=2)
    naive = timed(lambda: naive_scores(scorer, subset, query, replies))
    print(f"pairs: {len(subset)} statements x {len(replies)} replies = {n_pairs}")
    print(f"batched scorer : {n_pairs / batched:8.1f} pairs/s ({batched:.2f} s)")
    print(f"naive loop     : {n_pairs / naive:8.1f} pairs/s ({naive:.2f} s)")
    print(f"speed-up       : {naive / batched:8.1f}x (target >= 20x)")
    check = naive_scores(scorer, subset[:5], query, replies[:2])
    gap = float(np.abs(np.subtract(check, scorer.score(subset[:5], query, replies[:2]))).max())
    # bfloat16 kernels add up in a different order for each batch shape, so allow more there.
    tolerance = 1e-3 if scorer.nli.dtype == torch.float32 else 2e-2
    print(f"naive == batched on a sample: {gap <= tolerance} (largest gap {gap:.4f}, tolerance {tolerance})")

    # 2. One reply against the whole persona.
    one = timed(lambda: scorer.score(statements, query, [replies[0]]), repeat=2)
    print(f"one reply vs {len(statements)} statements: {one * 1000:.0f} ms")

    # 3. Two-stage retrieval as the agent does it (`chat --rerank`): embeddings pick the top-N, the
    # relevance model reranks them. Statement embeddings are cached after the first call.
    retriever = EmbeddingRetriever(
        reranker=scorer.relevance, candidates=args.top_n, device=scorer.relevance.device_name
    )

    def two_stage(q: str) -> list[int]:
        return retriever.select(statements, q, 5)

    two_stage(QUERIES[1])  # warm-up
    latencies = []
    for q in QUERIES * 3:
        start = time.perf_counter()
        two_stage(q)
        latencies.append(time.perf_counter() - start)
    median_ms, max_ms = statistics.median(latencies) * 1000, max(latencies) * 1000
    print(
        f"two-stage over {len(statements)} statements (top-{args.top_n} rerank): "
        f"median {median_ms:.0f} ms, max {max_ms:.0f} ms (target < 100 ms)"
    )


if __name__ == "__main__":
    main()
