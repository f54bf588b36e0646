"""APC-based DPO with TRL and LoRA.

The policy is the base model with an optional parent adapter (the SFT one) merged in; the new LoRA
is trained on top of it, and the reference model is that same merged model with the LoRA switched
off, so DPO measures its preference shift against the model that sampled the candidates.
"""

from __future__ import annotations

import shutil
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
from .pairs import PairConfig


@dataclass
class DpoConfig:
    output_dir: Path = Path("adapters/dpo")
    model: str | None = None
    parent: Path | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    pairs: PairConfig = field(default_factory=PairConfig)
    steps: int = 4
    batch_size: int = 2
    grad_accum: int = 1
    learning_rate: float = 1e-4
    beta: float = 0.1
    # Both lengths are explicit (the reference left them to defaults). A prompt longer than
    # max_prompt_length drops its pair instead of being cut: a persona cut in half teaches nonsense.
    max_length: int = 384
    max_prompt_length: int = 320
    gradient_checkpointing: bool = False
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        if self.max_prompt_length >= self.max_length:
            raise RolecraftError("dpo.max_prompt_length must be smaller than dpo.max_length")
        if self.pairs.ooc not in ("reject", "drop"):
            raise RolecraftError(f"dpo ooc must be 'reject' or 'drop', not {self.pairs.ooc!r}")
        if self.pairs.candidates < 2:
            raise RolecraftError("dpo candidates must be at least 2: a pair needs two replies")


def fit_pairs(pairs: list[dict[str, Any]], tokenizer: Any, cfg: DpoConfig) -> tuple[list[dict[str, Any]], int]:
    """The pairs whose prompt fits max_prompt_length (the count of dropped ones second)."""
    kept = []
    for p in pairs:
        ids = tokenizer.apply_chat_template(p["prompt"], tokenize=True, add_generation_prompt=True)
        if hasattr(ids, "keys"):  # transformers 5 may hand back a BatchEncoding
            ids = ids["input_ids"]
        if len(ids) <= cfg.max_prompt_length:
            kept.append(p)
    return kept, len(pairs) - len(kept)


def train_dpo(cfg: DpoConfig, pairs: list[dict[str, Any]], progress: bool = True) -> dict[str, Any]:
    """Train a DPO LoRA on preference pairs (rows of `pairs.make_pairs`); returns a summary."""
    cfg.check()
    limit_threads(cfg.threads)
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    t0 = time.perf_counter()
    net, tokenizer = load_policy(cfg.model, cfg.parent)
    kept, too_long = fit_pairs(pairs, tokenizer, cfg)
    if not kept:
        raise RolecraftError(f"No preference pairs to train on ({len(pairs)} made, {too_long} with prompts over "
                             f"max_prompt_length={cfg.max_prompt_length}).")
    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                               "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in kept])
    work = Path(cfg.output_dir).with_name(f".{Path(cfg.output_dir).name}.work")
    args = DPOConfig(**trainer_arguments(work, cfg.steps, cfg.batch_size, cfg.grad_accum, cfg.learning_rate,
                                         cfg.gradient_checkpointing, cfg.seed, progress),
                     beta=cfg.beta, max_length=cfg.max_length, truncation_mode="keep_start")
    trainer = DPOTrainer(model=net, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=cfg.lora.peft_config())
    result = trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    seconds = time.perf_counter() - t0
    summary = {
        "kind": "dpo", "pairs": len(kept), "pairs_prompt_too_long": too_long, "steps": cfg.steps,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(result.metrics.get("train_runtime", seconds) / max(cfg.steps, 1), 2),
        "losses": [e["loss"] for e in logs],
        "reward_accuracies": [e.get("rewards/accuracies") for e in logs],
        "reward_margins": [e.get("rewards/margins") for e in logs], "device": device_kind(),
    }
    meta = {"kind": "dpo", "model": cfg.model or "smollm2", "config": jsonable(cfg), "summary": summary,
            "parent": relative_parent(Path(cfg.parent), Path(cfg.output_dir)) if cfg.parent else None}
    if not trainer.accelerator.is_main_process:  # under `accelerate launch` one process saves
        return {}
    save_adapter(trainer.model, tokenizer, Path(cfg.output_dir), meta)
    shutil.rmtree(work, ignore_errors=True)
    return summary
