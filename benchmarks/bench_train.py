"""Seconds per optimiser step and peak memory of LoRA SFT and DPO on the embedded model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_train.py --kind sft --rank 32 --batch 4 --tokens 512
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_train.py --kind dpo --rank 8 --batch 2 --tokens 384 --threads 1

The examples are synthetic (a persona-style prompt padded with repeated sentences to about `--tokens`
tokens) so every step sees the same length. The first step is reported apart: it includes warm-up.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

FILLER = "Mira Holloway keeps the lighthouse on Skerrow and writes the weather in a pencil logbook. "


def examples(n: int, tokens: int) -> tuple[list[dict], list[dict]]:
    # ~20 tokens per filler sentence; half the length is prompt, half reply
    prompt_text = FILLER * max(1, tokens // 40)
    reply = FILLER * max(1, tokens // 40)
    system = {"role": "system", "content": "You are Mira Holloway."}
    sft = [{"instruction": f"{i}. {prompt_text}", "output": reply} for i in range(n)]
    dpo = [{"prompt": [system, {"role": "user", "content": f"{i}. {prompt_text}"}], "chosen": reply,
            "rejected": reply[::-1]} for i in range(n)]
    return sft, dpo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("sft", "dpo"), default="sft")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=384)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    args = ap.parse_args()

    from rolecraft.train.common import LoraSettings
    from rolecraft.train.dpo import DpoConfig, train_dpo
    from rolecraft.train.sft import SftConfig, train_sft

    sft_rows, dpo_rows = examples(args.batch * args.steps, args.tokens)
    lora = LoraSettings(rank=args.rank, alpha=2 * args.rank)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.kind == "sft":
            data = Path(tmp) / "alpaca.json"
            data.write_text(json.dumps(sft_rows))
            summary = train_sft(SftConfig(output_dir=Path(tmp) / "a", alpaca=[data], lora=lora, steps=args.steps,
                                          batch_size=args.batch, max_length=args.tokens + 64, threads=args.threads,
                                          gradient_checkpointing=args.checkpointing), progress=False)
        else:
            summary = train_dpo(DpoConfig(output_dir=Path(tmp) / "a", lora=lora, steps=args.steps,
                                          batch_size=args.batch, max_length=2 * args.tokens,
                                          max_prompt_length=2 * args.tokens - 1, threads=args.threads,
                                          gradient_checkpointing=args.checkpointing), dpo_rows, progress=False)
        wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(json.dumps({"kind": args.kind, "rank": args.rank, "batch": args.batch, "tokens": args.tokens,
                      "threads": args.threads, "checkpointing": args.checkpointing, "steps": args.steps,
                      "seconds_per_step": summary["seconds_per_step"], "wall_s": round(wall, 1),
                      "peak_rss_gb": round(peak_gb, 2), "losses": [round(x, 3) for x in summary["losses"]]}))


if __name__ == "__main__":
    main()
