"""`rolecraft build`: a tiny real run, a rerun that skips every step, and clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rolecraft.cli import app

QUERIES = ["Do you have a pet?", "Where do you live?", "What do you drink?", "Who is Tom?", "Can you swim?",
           "What do you do at dusk?"]


def tiny_config(tmp_path: Path, **model: str) -> Path:
    """cpu-small cut down to seconds: no teacher, 6 given queries (2 held out), 1 DPO step on 2 pairs."""
    queries = tmp_path / "queries.json"
    queries.write_text(json.dumps(QUERIES))
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Do you have a pet?", "output": "Barnacle, my grey cat."}] * 2))
    sft = "" if "launch" in model else f'[sft]\nalpaca = ["{alpaca}"]\nsteps = 1\n'  # SFT, then DPO on top
    launch = f'launch = "{model["launch"]}"\n' if "launch" in model else ""
    report = "[report]\nenabled = false\n" if "launch" in model else ""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(f"""preset = "cpu-small"
[model]
threads = 1
{launch}[agent]
max_new_tokens = 12
[queries]
synthesize = false
files = ["{queries}"]
heldout = 2
generic = false
max_train = 2
[dpo]
candidates = 2
margin = 0.0
steps = 1
batch_size = 1
max_pairs = 2
{report}{sft}""")
    return cfg


@pytest.mark.model
def test_build_runs_then_skips_unchanged_steps(tmp_path: Path) -> None:
    runner = CliRunner()
    home = tmp_path / "home"
    cfg = tiny_config(tmp_path)
    result = runner.invoke(app, ["build", "mira", "--config", str(cfg), "--home", str(home), "--no-progress"])
    assert result.exit_code == 0, result.output
    folder = home / "mira-holloway"
    assert (folder / "adapters" / "dpo" / "adapter_config.json").is_file()
    assert json.loads((folder / "adapters" / "dpo" / "rolecraft_adapter.json").read_text())["parent"] == "sft"
    assert (folder / "reports" / "build.md").is_file() and (folder / "reports" / "apc.png").is_file()
    report = json.loads((folder / "reports" / "build.json").read_text())
    assert list(report["stages"]) == ["base", "sft", "dpo"]
    assert all(0 <= s["ooc_rate"] <= 1 and s["apc_low"] <= s["apc_mean"] <= s["apc_high"]
               for s in report["stages"].values())
    md = (folder / "reports" / "build.md").read_text()
    assert "| base |" in md and "| dpo |" in md and "Preference pairs" in md

    t0 = time.perf_counter()
    again = runner.invoke(app, ["build", "mira", "--config", str(cfg), "--home", str(home), "--no-progress"])
    assert again.exit_code == 0, again.output
    for step in ("sft", "dpo", "report"):
        assert f"{step}: skipped (unchanged)" in again.output
    assert "running" not in again.output
    assert time.perf_counter() - t0 < 20

    # a changed input reruns the steps that depend on it, and only those
    cfg.write_text(cfg.read_text().replace("max_new_tokens = 12", "max_new_tokens = 10"))
    third = runner.invoke(app, ["build", "mira", "--config", str(cfg), "--home", str(home), "--no-progress"])
    assert third.exit_code == 0, third.output
    assert "dpo: running" in third.output and "report: running" in third.output
    assert "sft: skipped (unchanged)" in third.output


@pytest.mark.model
def test_training_step_runs_under_a_launcher(tmp_path: Path) -> None:
    """The path `accelerate launch` takes on several GPUs, run with one CPU process."""
    pytest.importorskip("accelerate")
    runner = CliRunner()
    home = tmp_path / "home"
    cfg = tiny_config(tmp_path, launch="accelerate launch --num_processes 1 --cpu")
    result = runner.invoke(app, ["build", "mira", "--config", str(cfg), "--home", str(home), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "dpo: launching `accelerate launch" in result.output
    assert (home / "mira-holloway" / "adapters" / "dpo" / "adapter_config.json").is_file()
    assert (home / "mira-holloway" / "build" / "dpo-job.summary.json").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["build", "nobody-at-all"], "neither a file"),
    (["build", "mira", "--preset", "huge"], "Unknown preset"),
    (["build", "mira", "--config", "missing.toml"], "not found"),
    (["build", "mira", "--preset", "gpu"], "Set [model] name"),
    (["export-model", "mira", "--adapter", "nope"], "No LoRA adapter 'nope'"),
    (["train", "dpo", "mira", "--ooc", "keep"], "ooc must be"),
    (["train", "dpo", "mira"], "No queries for 'Mira Holloway'"),
    (["train", "sft", "mira"], "No experience rows"),
    (["train", "sft", "mira", "--alpaca", "missing.json"], "Training data not found"),
])
def test_build_and_train_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_bad_config_key_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[dpo]\nbeta_ = 0.2\n")
    result = CliRunner().invoke(app, ["build", "mira", "--config", str(cfg), "--home", str(tmp_path)])
    assert result.exit_code == 1 and "Unknown key 'beta_' in [dpo]" in " ".join(result.output.split())
