"""LoRA SFT with TRL: experience dialogues of the synthesis pipeline and/or Alpaca instruction data.

Every example is a prompt-completion pair of chat messages and the loss is on the completion (the
reply) only. A multi-turn experience dialogue gives one example per character turn, with the
turns before it as the prompt. Alpaca rows (`instruction`, `input`, `output`) become a user
message (instruction, then input) and the output, as EGOS trains general instruction following
before role-play.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from .common import (
    LoraSettings,
    device_kind,
    jsonable,
    limit_threads,
    load_policy,
    relative_parent,
    save_adapter,
    trainer_arguments,
)


@dataclass
class SftConfig:
    output_dir: Path = Path("adapters/sft")
    experiences: Path | None = None  # datasets/sft.jsonl of the synthesis pipeline
    alpaca: list[Path] = field(default_factory=list)  # Alpaca JSON / JSONL files
    alpaca_limit: int | None = None  # at most this many instruction rows (sampled with `seed`)
    model: str | None = None  # 'smollm2', an HF folder, or a .gguf file
    parent: Path | None = None  # an adapter to start from (merged into the base first)
    lora: LoraSettings = field(default_factory=LoraSettings)
    steps: int = 4
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 2e-4
    max_length: int = 384  # prompt + reply tokens; longer examples are cut from the end
    gradient_checkpointing: bool = False
    seed: int = 0
    threads: int | None = None


def experience_examples(path: Path) -> list[dict[str, Any]]:
    """Prompt-completion examples from the pipeline's SFT rows (`{"id", "kind", "messages"}`)."""
    examples = []
    for row in _read_rows(path):
        messages = row.get("messages")
        if not isinstance(messages, list):
            continue
        for i, m in enumerate(messages):
            if i > 0 and m.get("role") == "assistant" and str(m.get("content", "")).strip():
                examples.append({"prompt": messages[:i], "completion": [m], "source": f"sft:{row.get('id')}"})
    return examples


def alpaca_examples(path: Path) -> list[dict[str, Any]]:
    """Prompt-completion examples from Alpaca rows; rows without instruction or output are skipped."""
    examples = []
    for i, row in enumerate(_read_rows(path)):
        instruction = str(row.get("instruction") or "").strip()
        extra = str(row.get("input") or "").strip()
        output = str(row.get("output") or "").strip()
        if not instruction or not output:
            continue
        user = f"{instruction}\n\n{extra}" if extra else instruction
        examples.append({"prompt": [{"role": "user", "content": user}],
                         "completion": [{"role": "assistant", "content": output}], "source": f"alpaca:{i}"})
    return examples


def _read_rows(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise RolecraftError(f"Training data not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise RolecraftError(f"{path} is neither a JSON list nor JSON Lines: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise RolecraftError(f"{path} must hold JSON objects (one per line, or a list of them)")
    return rows


def collect(cfg: SftConfig) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    if cfg.experiences is not None:
        examples += experience_examples(cfg.experiences)
    instruction: list[dict[str, Any]] = []
    for path in cfg.alpaca:
        instruction += alpaca_examples(path)
    if cfg.alpaca_limit is not None and len(instruction) > cfg.alpaca_limit:
        instruction = random.Random(cfg.seed).sample(instruction, cfg.alpaca_limit)
    examples += instruction
    if not examples:
        raise RolecraftError("No SFT examples: give experience rows (`rolecraft synth all CHARACTER` writes "
                             "datasets/sft.jsonl) or an Alpaca JSON file with --alpaca.")
    return examples


def train_sft(cfg: SftConfig, progress: bool = True) -> dict[str, Any]:
    """Train a LoRA adapter on the SFT examples and save it to `cfg.output_dir`; returns a summary."""
    limit_threads(cfg.threads)
    examples = collect(cfg)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    t0 = time.perf_counter()
    net, tokenizer = load_policy(cfg.model, cfg.parent)
    data = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    work = Path(cfg.output_dir).with_name(f".{Path(cfg.output_dir).name}.work")
    args = SFTConfig(**trainer_arguments(work, cfg.steps, cfg.batch_size, cfg.grad_accum, cfg.learning_rate,
                                         cfg.gradient_checkpointing, cfg.seed, progress),
                     max_length=cfg.max_length, completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=net, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=cfg.lora.peft_config())
    result = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    seconds = time.perf_counter() - t0
    summary = {
        "kind": "sft", "examples": len(examples), "steps": cfg.steps, "seconds": round(seconds, 1),
        "seconds_per_step": round(result.metrics.get("train_runtime", seconds) / max(cfg.steps, 1), 2),
        "losses": losses, "device": device_kind(),
        "sources": sorted({e["source"].split(":")[0] for e in examples}),
    }
    meta = {"kind": "sft", "model": cfg.model or "smollm2", "config": jsonable(cfg), "summary": summary,
            "parent": relative_parent(Path(cfg.parent), Path(cfg.output_dir)) if cfg.parent else None}
    if not trainer.accelerator.is_main_process:  # under `accelerate launch` one process saves
        return {}
    save_adapter(trainer.model, tokenizer, Path(cfg.output_dir), meta)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return summary


__all__ = ["SftConfig", "train_sft", "collect", "alpaca_examples", "experience_examples"]
