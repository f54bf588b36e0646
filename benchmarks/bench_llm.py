"""Load time and generation speed of each available LLM backend on the embedded SmolLM2-135M.

    .venv/bin/python benchmarks/bench_llm.py [--new-tokens 64] [--threads N]

Backends: local (transformers) at batch 1 and 8, llamacpp (if installed), and openai (the
OpenAI-compatible client talking to rolecraft's own server on loopback, the local model behind it).
Tokens are counted with SmolLM2's tokenizer for every backend, so the figures compare.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rolecraft.llm.base import LLM, Message, Sampling  # noqa: E402

PROMPTS = [
    "Tell a long story about a lighthouse keeper who finds a message in a bottle.",
    "Describe, step by step, how to bake sourdough bread at home.",
    "Write a detailed travel diary entry about a day in a mountain village.",
    "Explain how a steam engine works to a curious ten-year-old.",
    "Tell the story of a cat who becomes the mayor of a small town.",
    "Describe a bustling harbour market at dawn in rich detail.",
    "Write a letter from a sailor to his sister about a storm at sea.",
    "Explain the rules of chess to someone who has never played.",
]


def convo(prompt: str) -> list[Message]:
    return [{"role": "user", "content": prompt}]


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def report(name: str, load_s: float, texts: list[str], gen_s: float, count: Callable[[str], int]) -> None:
    tokens = sum(count(t) for t in texts)
    print(
        f"{name:<22} load {load_s:6.2f}s   {tokens:4d} tokens in {gen_s:6.2f}s = {tokens / gen_s:6.1f} tok/s"
    )


def bench(name: str, llm: LLM, load_s: float, s: Sampling, batch: int, count: Callable[[str], int]) -> None:
    llm.chat(convo("Hi"), s, max_new_tokens=4)  # warm-up: first-call allocations are not speed
    if batch == 1:
        texts, gen_s = timed(lambda: [llm.chat(convo(PROMPTS[0]), s)])
    else:
        texts, gen_s = timed(lambda: llm.chat_batch([convo(p) for p in PROMPTS[:batch]], s))
    report(name, load_s, texts, gen_s, count)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch / llama.cpp threads")
    args = parser.parse_args()
    s = Sampling(temperature=0.0, max_new_tokens=args.new_tokens)

    import torch

    from rolecraft.llm.local import LocalLLM

    if args.threads:
        torch.set_num_threads(args.threads)
    load = getattr(os, "getloadavg", lambda: (float("nan"),) * 3)()
    print(f"cpus {os.cpu_count()}  torch threads {torch.get_num_threads()}  load average {load[0]:.2f}")
    print(f"greedy, up to {args.new_tokens} new tokens per reply\n")

    local, load_s = timed(LocalLLM)
    assert isinstance(local, LocalLLM)

    def count(text: str) -> int:
        return len(local.tokenizer(text, add_special_tokens=False)["input_ids"])

    bench("local batch 1", local, load_s, s, 1, count)
    bench("local batch 8", local, load_s, s, 8, count)

    try:
        from rolecraft.llm.llamacpp import LlamaCppLLM

        llama, load_s = timed(lambda: LlamaCppLLM(n_threads=args.threads))
        bench("llamacpp batch 1", llama, load_s, s, 1, count)  # type: ignore[arg-type]
    except Exception as exc:  # an optional backend: report and carry on
        print(f"llamacpp               unavailable: {exc}")

    from rolecraft.llm.openai_compat import OpenAICompatLLM
    from rolecraft.server import create_app, running_server

    start = time.perf_counter()
    with running_server(create_app({"smollm2": local})) as url:
        client = OpenAICompatLLM("smollm2", base_url=url)
        load_s = time.perf_counter() - start
        bench("openai (loopback) b1", client, load_s, s, 1, count)
        bench("openai (loopback) b8", client, load_s, s, 8, count)


if __name__ == "__main__":
    main()
