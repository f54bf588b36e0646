"""What SFT and DPO share: LoRA settings, the base model, trainer arguments, adapters by name.

An adapter lives in `<workspace>/<slug>/adapters/<name>/` (PEFT files plus `rolecraft_adapter.json`).
A DPO adapter trained on top of an SFT adapter names it as its `parent`: loading it applies the
parent first (merged into the weights), then the adapter itself; the CLI, the server and the GGUF
exporter all follow that chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from ..paths import atomic_write_json

ADAPTERS = "adapters"
ADAPTER_META = "rolecraft_adapter.json"


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: int = 16  # set explicitly: PEFT's default (8) silently halves the update of rank-16 adapters
    dropout: float = 0.05
    # every attention and MLP projection of a Llama-style model
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])

    def peft_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.targets), task_type="CAUSAL_LM")


def from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """A dataclass from a dict; an unknown key is a clear error naming it and the keys that exist."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RolecraftError(f"Unknown key(s) in [{where}]: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return cls(**data)


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def limit_threads(threads: int | None) -> None:
    """Cap torch's CPU threads (training on a shared 2-core machine must not starve other work)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def base_folder(model: str | None) -> Path:
    """The HF folder of a model reference ('smollm2', a folder, a .gguf file)."""
    from ..llm.local import hf_folder, resolve_model_path

    return hf_folder(resolve_model_path(model))


def load_policy(model: str | None, parent: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) in fp32 on CPU / bf16 on GPU, with a parent adapter chain merged in."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..hf import quiet_loading

    folder = base_folder(model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if device_kind() == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    with quiet_loading():
        net = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    if parent is not None:
        net = merge_chain(net, parent)
    return net, tokenizer


def adapter_chain(path: Path) -> list[Path]:
    """The adapters to apply, oldest first: the parents named in rolecraft_adapter.json, then `path`."""
    chain: list[Path] = []
    current: Path | None = Path(path)
    while current is not None:
        if current in chain:
            raise RolecraftError(f"Adapter parents form a loop at {current}")
        if not (current / "adapter_config.json").is_file():
            raise RolecraftError(f"Not a LoRA adapter folder (no adapter_config.json): {current}")
        chain.insert(0, current)
        meta = read_meta(current)
        parent = meta.get("parent")
        current = (current.parent / parent) if parent and not Path(parent).is_absolute() else (
            Path(parent) if parent else None)
    return chain


def merge_chain(net: Any, adapter: Path, keep_last: bool = False) -> Any:
    """Apply an adapter chain; all merged into the weights, or the last one left as a live PEFT adapter."""
    from peft import PeftModel

    chain = adapter_chain(adapter)
    for i, path in enumerate(chain):
        net = PeftModel.from_pretrained(net, str(path))
        if not (keep_last and i == len(chain) - 1):
            net = net.merge_and_unload()
    return net


def read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / ADAPTER_META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def adapters_dir(character_folder: Path) -> Path:
    return Path(character_folder) / ADAPTERS


def resolve_adapter(ref: str | Path | None, workspace: Any = None, character: str | None = None) -> Path | None:
    """An adapter folder from a path, a bare name of the character's adapters, or 'character/name'.

    With no character (the server serves many), a bare name must be unique across the workspace.
    """
    if ref is None or str(ref) == "":
        return None
    text = str(ref)
    path = Path(text).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    if workspace is None:
        from ..workspace import Workspace

        workspace = Workspace()
    candidates: list[Path] = []
    if "/" in text and len(Path(text).parts) == 2 and workspace.exists(Path(text).parts[0]):
        slug, name = Path(text).parts
        candidates = [adapters_dir(workspace.path(slug)) / name]
    elif "/" not in text:
        slugs = [character] if character else workspace.list()
        candidates = [adapters_dir(workspace.path(s)) / text for s in slugs if workspace.exists(s)]
    found = [c for c in candidates if (c / "adapter_config.json").is_file()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(f"{c.parent.parent.name}/{text}" for c in found)
        raise RolecraftError(f"Adapter name '{text}' is ambiguous; say which: {names}")
    where = f"the adapters of '{character}'" if character else f"the workspace {workspace.root}"
    raise RolecraftError(f"No LoRA adapter '{text}': not an adapter folder, and not found in {where} "
                         "(train one with `rolecraft train sft` or `rolecraft train dpo`).")


def list_adapters(character_folder: Path) -> list[str]:
    root = adapters_dir(character_folder)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "adapter_config.json").is_file())


def save_adapter(net: Any, tokenizer: Any, target: Path, meta: dict[str, Any]) -> Path:
    """Write the adapter to a temporary folder beside `target`, then swap it in: never half a folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    net.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    atomic_write_json(tmp / ADAPTER_META, {**meta, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    if target.exists():
        target.replace(old)
    tmp.replace(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def trainer_arguments(output_dir: Path, steps: int, batch_size: int, grad_accum: int, lr: float,
                      gradient_checkpointing: bool, seed: int, progress: bool = True) -> dict[str, Any]:
    """Arguments every rolecraft trainer shares.

    bf16 is off on CPU: this CPU has no bf16 units and TRL's default made a step 7x slower here.
    Nothing is checkpointed to disk mid-run: the runs are short and the adapter is saved at the end.
    """
    import torch

    cpu = device_kind() == "cpu"
    return dict(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=lr, lr_scheduler_type="constant",
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", seed=seed,
        bf16=not cpu and torch.cuda.is_bf16_supported(), fp16=False, use_cpu=cpu,
        dataloader_num_workers=0, disable_tqdm=not progress,
        # only named when on: transformers 5 warns about the old name even when it is False
        **({"gradient_checkpointing": True} if gradient_checkpointing else {}),
    )


def hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def jsonable(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON values (paths as strings)."""
    return json.loads(json.dumps(asdict(cfg), default=str))


def relative_parent(parent: Path, target: Path) -> str:
    """Sibling adapters are recorded by name, so a workspace can move without breaking the chain."""
    return parent.name if parent.resolve().parent == target.resolve().parent else str(parent.resolve())


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(position, object) pairs; the position names the line (JSONL) or the list item (JSON)."""
    if not path.is_file():
        raise RolecraftError(f"Training data file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RolecraftError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}.") from exc
        if not isinstance(items, list):
            raise RolecraftError(f"{path} must hold a JSON list of rows.")
        for i, item in enumerate(items, 1):
            yield f"item {i}", item
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {n}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise RolecraftError(f"{path}, line {n}: not valid JSON ({exc.msg}).") from exc
