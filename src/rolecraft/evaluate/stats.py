"""Small statistics for reports: a mean with a percentile-bootstrap interval, and rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean (or rate) with the bounds of its bootstrap interval and the number of values it rests on."""

    mean: float
    low: float
    high: float
    n: int

    def fmt(self, digits: int = 2) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def bootstrap_ci(values: Sequence[float], n: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The mean of `values` and a percentile bootstrap interval (resampling the values with replacement).

    With one value (or all values equal) the interval collapses to the mean; with none everything is NaN.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n, arr.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return Interval(float(arr.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)),
                    int(arr.size))


def rate_ci(hits: Sequence[bool], n: int = 2000, seed: int = 0) -> Interval:
    """A share of True values with its bootstrap interval."""
    return bootstrap_ci([1.0 if h else 0.0 for h in hits], n=n, seed=seed)
