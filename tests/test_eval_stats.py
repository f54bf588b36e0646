"""The bootstrap interval and the result log (resume, torn lines, changed settings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rolecraft.errors import RolecraftError
from rolecraft.evaluate.stats import bootstrap_ci, rate_ci
from rolecraft.evaluate.store import ResultLog, stable_id


def test_bootstrap_known_cases() -> None:
    same = bootstrap_ci([2.5] * 10)
    assert (same.mean, same.low, same.high, same.n) == (2.5, 2.5, 2.5, 10)
    empty = bootstrap_ci([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.fmt() == "–"
    one = bootstrap_ci([4.0])
    assert (one.low, one.high) == (4.0, 4.0)
    half = bootstrap_ci([0, 1] * 50, seed=1)
    assert half.mean == 0.5 and 0.38 < half.low < 0.45 and 0.55 < half.high < 0.62  # ≈ 0.5 ± 1.96·0.05
    assert bootstrap_ci([0, 1] * 50, seed=1) == half  # seeded: the same interval every run
    wide, narrow = bootstrap_ci([0, 1] * 5), bootstrap_ci([0, 1] * 500)
    assert wide.high - wide.low > narrow.high - narrow.low
    assert bootstrap_ci([1, 2, 3, None]).n == 3  # type: ignore[list-item]
    with pytest.raises(ValueError):
        bootstrap_ci([1.0], level=1.5)


def test_rate_interval_stays_in_bounds() -> None:
    r = rate_ci([True, False, False, False])
    assert r.mean == 0.25 and 0.0 <= r.low <= r.mean <= r.high <= 1.0
    assert rate_ci([True] * 5).fmt() == "1.00 [1.00, 1.00]"


def test_result_log_resumes_and_ignores_a_torn_line(tmp_path: Path) -> None:
    log = ResultLog(tmp_path, {"a": 1})
    log.append([{"id": "x", "v": 1}, {"id": "y", "v": 2}])
    with open(tmp_path / "results.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "z", "v"')  # the process died mid-write
    again = ResultLog(tmp_path, {"a": 1})
    assert again.done("x") and again.done("y") and not again.done("z")
    again.append([{"id": "z", "v": 3}])
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1]) == {"id": "z", "v": 3}
    assert len(ResultLog(tmp_path, {"a": 1}).rows()) == 3


def test_result_log_refuses_other_settings_unless_fresh(tmp_path: Path) -> None:
    ResultLog(tmp_path, {"max_new_tokens": 48}).append([{"id": "x"}])
    with pytest.raises(RolecraftError, match="max_new_tokens"):
        ResultLog(tmp_path, {"max_new_tokens": 64})
    assert ResultLog(tmp_path, {"max_new_tokens": 64}, fresh=True).rows() == []


def test_stable_ids() -> None:
    assert stable_id("apc", "alice", "rag", "Who are you?") == stable_id("apc", "alice", "rag", "Who are you?")
    assert stable_id("a", "bc") != stable_id("ab", "c")
