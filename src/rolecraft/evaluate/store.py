"""Raw results as JSON Lines with stable row ids, so an interrupted eval resumes where it stopped.

Each row is appended (and flushed to disk) as soon as it is finished; a rerun reads the ids already there and
skips them. A torn last line (the process died mid-write) is ignored. `run.json` next to the rows records the
settings that change results; resuming with other settings is refused (start over with --fresh).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from ..paths import atomic_write_json


def stable_id(*parts: object) -> str:
    """A short id from text parts (the same parts give the same id in every run)."""
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:12]


class ResultLog:
    def __init__(self, folder: Path, settings: dict[str, Any], fresh: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "results.jsonl"
        self.folder.mkdir(parents=True, exist_ok=True)
        run_file = self.folder / "run.json"
        if fresh and self.path.exists():
            self.path.unlink()
        if self.path.exists() and run_file.is_file():
            before = json.loads(run_file.read_text(encoding="utf-8")).get("settings", {})
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                raise RolecraftError(
                    f"{self.path} was made with other settings ({', '.join(changed)}); pass --fresh to start "
                    "over or --out to write elsewhere.")
        atomic_write_json(run_file, {"settings": settings})
        self._rows = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return rows
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by an interruption; its item runs again
            if isinstance(row, dict) and "id" in row:
                rows[row["id"]] = row
        return rows

    def done(self, row_id: str) -> bool:
        return row_id in self._rows

    def get(self, row_id: str) -> dict[str, Any] | None:
        return self._rows.get(row_id)

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self._rows.values() if kind is None or r.get("kind") == kind]

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() > 0 and not self.path.read_bytes().endswith(b"\n"):
                f.write("\n")  # after a torn line, start a fresh one
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for r in rows:
            self._rows[r["id"]] = r
