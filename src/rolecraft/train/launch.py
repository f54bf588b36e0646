"""Run one SFT or DPO job in its own process, so that `accelerate launch` can spread it over GPUs.

`rolecraft build` with `[model] launch = "accelerate launch --num_processes 4"` writes each training
job as JSON (its config, and for DPO the pairs file) and runs `<launch> -m rolecraft.train.launch JOB`;
every process trains its share of each batch, and the main process saves the adapter and the summary.
By hand:

    accelerate launch --num_processes 4 -m rolecraft.train.launch job.json
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from ..paths import atomic_write_json
from .common import LoraSettings, jsonable
from .dpo import DpoConfig
from .pairs import PairConfig, read_jsonl
from .sft import SftConfig

_PATHS = {"output_dir", "experiences", "parent"}


def _config(cls: type, data: dict[str, Any]) -> Any:
    d = dict(data)
    for key in _PATHS & set(d):
        d[key] = Path(d[key]) if d[key] is not None else None
    if "alpaca" in d:
        d["alpaca"] = [Path(p) for p in d["alpaca"]]
    d["lora"] = LoraSettings(**d["lora"])
    if "pairs" in d:
        d["pairs"] = PairConfig(**d["pairs"])
    return cls(**d)


def write_job(path: Path, kind: str, cfg: SftConfig | DpoConfig, pairs_file: Path | None = None) -> Path:
    job = {"kind": kind, "config": jsonable(cfg), "pairs": str(pairs_file) if pairs_file else None,
           "summary": str(Path(path).with_suffix(".summary.json"))}
    atomic_write_json(Path(path), job)
    return Path(path)


def run_job(path: Path) -> dict[str, Any]:
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    if job["kind"] == "sft":
        from .sft import train_sft

        summary = train_sft(_config(SftConfig, job["config"]))
    elif job["kind"] == "dpo":
        from .dpo import train_dpo

        summary = train_dpo(_config(DpoConfig, job["config"]), read_jsonl(Path(job["pairs"])))
    else:
        raise RolecraftError(f"Unknown training job kind {job['kind']!r}")
    if summary:  # only the main process returns one
        atomic_write_json(Path(job["summary"]), summary)
    return summary


def launch(launcher: str, job: Path) -> dict[str, Any]:
    """Run the job under `launcher` (e.g. 'accelerate launch --num_processes 4') and read its summary."""
    prefix = shlex.split(launcher)
    if prefix and prefix[0] in ("python", "python3"):
        prefix[0] = sys.executable
    elif prefix and not shutil.which(prefix[0]) and (Path(sys.executable).parent / prefix[0]).is_file():
        prefix[0] = str(Path(sys.executable).parent / prefix[0])  # e.g. accelerate from an unactivated venv
    cmd = [*prefix, "-m", "rolecraft.train.launch", str(job)]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RolecraftError(f"Training job failed (exit {done.returncode}): {' '.join(cmd)}")
    summary_file = Path(json.loads(job.read_text(encoding="utf-8"))["summary"])
    if not summary_file.is_file():
        raise RolecraftError(f"The training job wrote no summary ({summary_file}): {' '.join(cmd)}")
    return json.loads(summary_file.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m rolecraft.train.launch JOB.json")
    try:
        run_job(Path(args[0]))
    except RolecraftError as exc:
        sys.exit(f"Error: {exc}")


if __name__ == "__main__":
    main()
