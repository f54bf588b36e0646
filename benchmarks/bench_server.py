"""The character server under load: N streamed chats at once vs the same N one after another.

    .venv/bin/python benchmarks/bench_server.py [--requests 16] [--max-tokens 32] [--threads N]

A live server on loopback with the embedded SmolLM2 behind it and the bundled character `mira`;
each request is a streamed chat completion (the role-play agent: retrieval, prompt, generation).
Prints requests/s, p50/p95 latency, p50 time to the first token, completion tokens/s, and how many
generate() batches the engine ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

QUESTIONS = [
    "Hello! Who are you?", "Do you have a cat?", "What do you do every evening?", "Where were you born?",
    "Do you like helicopters?", "Can you swim?", "Who brings your supplies?", "What do you drink?",
    "Do you have a phone?", "What do you grow in your garden?", "How old are you?", "Do you play music?",
    "What happened in the January gale?", "Are you married?", "What do you knit?", "Who taught you the work?",
]  # fmt: skip


def chat(url: str, question: str, max_tokens: int) -> dict[str, float]:
    body = {
        "model": "mira", "messages": [{"role": "user", "content": question}], "stream": True,
        "max_tokens": max_tokens, "temperature": 0, "stream_options": {"include_usage": True},
    }  # fmt: skip
    start = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    return {"latency": time.perf_counter() - start, "ttft": first or 0.0, "tokens": tokens}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(name: str, url: str, questions: list[str], max_tokens: int, workers: int, engine: Any) -> None:
    batches, rows = engine.batches, engine.batched_rows
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda q: chat(url, q, max_tokens), questions))
    wall = time.perf_counter() - start
    latency = [r["latency"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    print(
        f"{name:<11} {len(results)} requests in {wall:6.2f}s = {len(results) / wall:5.2f} req/s | "
        f"latency p50 {percentile(latency, 0.5):5.2f}s p95 {percentile(latency, 0.95):5.2f}s | "
        f"first token p50 {statistics.median(r['ttft'] for r in results):5.2f}s | "
        f"{tokens} tokens = {tokens / wall:6.1f} tok/s | "
        f"{engine.batches - batches} batches for {engine.batched_rows - rows} rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    from rolecraft.llm.local import LocalLLM
    from rolecraft.server import running_server
    from rolecraft.server.characters import ServerConfig, create_character_app
    from rolecraft.server.openai_api import Limits
    from rolecraft.workspace import Workspace

    if args.threads:
        torch.set_num_threads(args.threads)
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
    llm = LocalLLM()
    with tempfile.TemporaryDirectory() as tmp:
        limits = Limits(max_pending=max(32, args.requests), max_batch=max(16, args.requests))
        app = create_character_app(llm, Path(tmp) / "s.sqlite3", Workspace(Path(tmp) / "ws"), ServerConfig(limits))
        engine = app.state.server.engine
        with running_server(app) as url:
            chat(url, "Hi", 4)  # warm-up: loads the retriever, first-call allocations
            print(f"{args.requests} streamed chats with mira, max_tokens={args.max_tokens}, greedy, "
                  f"torch threads={torch.get_num_threads()}")
            run("sequential", url, questions, args.max_tokens, 1, engine)
            run("concurrent", url, questions, args.max_tokens, args.requests, engine)


if __name__ == "__main__":
    main()
