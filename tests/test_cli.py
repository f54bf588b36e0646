"""The `rolecraft` command line, run as a user would (CliRunner over the real Typer app)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rolecraft.cards import placeholder_png
from rolecraft.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "ws"


def _chunk_png(keyword: bytes, text: bytes) -> bytes:
    import struct
    import zlib

    png = placeholder_png()
    body = keyword + b"\x00" + text
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:-12] + chunk + png[-12:]  # before IEND


MALFORMED: dict[str, bytes] = {
    "empty.txt": b"",
    "blank.txt": b"\n\n   \n",
    "binary.txt": bytes(range(256)) * 4,
    "broken.json": b'{"name": "Ann", "statements": [',
    "number.json": b"42",
    "empty-list.json": b"[]",
    "mixed-list.json": b'["Ann likes tea.", 3]',
    "nameless-card.json": json.dumps({"spec": "chara_card_v2", "data": {"description": "x"}}).encode(),
    "no-card.png": placeholder_png(),
    "bad-base64.png": _chunk_png(b"chara", b"%%%not base64%%%"),
    "not-really.png": b"GIF89a this is no png",
    "character.yaml": b"name: Ann",
}


@pytest.mark.parametrize("filename", sorted(MALFORMED))
def test_malformed_input_gives_one_clear_error_and_writes_nothing(tmp_path: Path, home: Path, filename: str) -> None:
    bad = tmp_path / filename
    bad.write_bytes(MALFORMED[filename])
    code, output = run("import", str(bad), "--home", str(home))
    assert code == 1
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert lines[0].startswith("Error:") and filename in output.replace("\n", "")
    assert "Traceback" not in output
    assert not home.exists() or not any(home.iterdir())


def test_missing_file_is_a_clear_error(tmp_path: Path, home: Path) -> None:
    code, output = run("import", str(tmp_path / "nope.json"), "--home", str(home))
    assert code == 1 and "nope.json" in output


def test_import_list_export_round_trip(tmp_path: Path, home: Path, shared_data: Path) -> None:
    code, output = run("import", str(shared_data / "apc_alice" / "Alice.json"), "--home", str(home))
    assert code == 0, output
    assert "Alice" in output and "8 statements" in output
    code, output = run("list", "--home", str(home))
    assert code == 0 and "alice" in output and "mira" in output
    png = tmp_path / "alice.png"
    code, output = run("export", "alice", "--format", "card-v2-png", "-o", str(png), "--home", str(home))
    assert code == 0, output
    chunk = png.read_bytes().split(b"tEXtchara\x00", 1)[1]
    card = json.loads(base64.b64decode(chunk[: chunk.index(b"IEND") - 8]))
    assert card["spec"] == "chara_card_v2" and card["data"]["name"] == "Alice"
    code, output = run("import", str(png), "--name", "Alice Again", "--home", str(home))
    assert code == 0, output
    code, output = run("import", str(png), "--name", "Alice Again", "--home", str(home))
    assert code == 1 and "exists" in output.lower()


def test_export_rejects_unknown_format(home: Path) -> None:
    code, output = run("export", "mira", "--format", "docx", "--home", str(home))
    assert code == 1 and "docx" in output


def test_chat_rejects_bad_options(home: Path) -> None:
    assert run("chat", "mira", "--mode", "everything", "--home", str(home))[0] == 1
    code, output = run("chat", "nobody-here", "--once", "hi", "--home", str(home))
    assert code == 1 and "nobody-here" in output


def test_every_command_has_help() -> None:
    for command in ["import", "export", "list", "chat", "demo", "score", "serve", "extract", "synth", "train"]:
        code, output = run(command, "--help")
        assert code == 0 and "Usage" in output


@pytest.mark.model
def test_chat_once_answers_with_the_embedded_model(home: Path) -> None:
    code, output = run("chat", "mira", "--once", "Who are you?", "--max-tokens", "24", "--seed", "1",
                       "--show-statements", "--home", str(home))
    assert code == 0, output
    assert "Mira Holloway:" in output and "•" in output


def test_train_discriminators_calibrates_on_held_out_rows(tmp_path: Path) -> None:
    labels = ["entailed", "neutral", "contradicted"]
    rows = [
        {"character": "Bo", "statement": f"Bo owns {i} cats.", "query": "Pets?",
         "response": f"I have {i if i % 3 == 0 else i + 1} cats.", "label": labels[i % 3]}
        for i in range(24)
    ]  # fmt: skip
    train_file, calibration_file = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:16]), encoding="utf-8")
    calibration_file.write_text("".join(json.dumps(r) + "\n" for r in rows[16:]), encoding="utf-8")
    out = tmp_path / "nli"
    code, output = run("train", "discriminators", "--task", "nli", "--train", str(train_file),
                       "--output", str(out), "--calibrate", str(calibration_file))  # fmt: skip
    assert code == 0, output
    assert json.loads((out / "metrics.json").read_text())["calibration"]["rows"] == 8
    assert len(json.loads((out / "config.json").read_text())["calibration_weights"]) == 3
    # Rows without every label: one message, a non-zero exit, nothing written.
    calibration_file.write_text(json.dumps(rows[16]) + "\n", encoding="utf-8")
    code, output = run("train", "discriminators", "--task", "nli", "--train", str(train_file),
                       "--output", str(tmp_path / "bad"), "--calibrate", str(calibration_file))  # fmt: skip
    assert code != 0 and "every NLI label" in output
    assert not (tmp_path / "bad").exists()
