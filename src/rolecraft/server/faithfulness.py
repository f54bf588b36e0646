"""The APC report of one reply for the server: the scorer is loaded on first use, once, and used by one
request at a time (its discriminators are not thread-safe, and scoring is quick next to generation)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field

from ..errors import RolecraftError
from .protocol import ApiError, Strict


class FaithfulnessRequest(Strict):
    """Either a character (`model`) with `query` and `reply`, or a stored turn (`session_id`, `turn`)."""

    model: str | None = None
    query: str | None = None
    reply: str | None = None
    statements: list[str] | None = Field(None, max_length=1000)  # default: all the character's statements
    session_id: str | None = None
    turn: int | None = Field(None, ge=0)


def _default_scorer() -> Any:
    from ..apc import APCScorer

    return APCScorer.pretrained(device="cpu")


class Faithfulness:
    def __init__(self, factory: Callable[[], Any] | None = None, max_pending: int = 32):
        self._factory = factory or _default_scorer
        self._scorer: Any = None
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.max_pending = max_pending
        self.pending = 0

    def _load(self) -> Any:
        if self._scorer is None:
            try:
                self._scorer = self._factory()
            except (RolecraftError, ImportError, OSError) as exc:
                message = f"The faithfulness scorer is unavailable: {exc}"
                raise ApiError(503, message, type="server_error", code="scorer_unavailable") from None
        return self._scorer

    def admit(self) -> None:
        with self._count:
            if self.pending >= self.max_pending:
                raise ApiError(
                    429, "Too many faithfulness requests in progress.", type="rate_limit_error",
                    code="rate_limit_exceeded", headers={"Retry-After": "2"},
                )  # fmt: skip
            self.pending += 1

    def done(self) -> None:
        with self._count:
            self.pending -= 1

    def report(self, statements: Sequence[str], query: str, reply: str, character: str) -> dict[str, Any]:
        """The APC report as JSON: totals, counts, and a row per statement (blocking; call from a thread)."""
        with self._lock:
            report = self._load().report(list(statements), query, [reply], character=character)[0]
        data = report.to_dict()
        rows = data["rows"]
        return {
            "object": "faithfulness",
            "query": query,
            "reply": reply,
            "total": data["total"],
            "mean": data["mean"],
            "statements": len(rows),
            "active": sum(1 for r in rows if r["active"]),
            "entailed": sum(1 for r in rows if r["active"] and r["p_entailed"] > 0.5),
            "contradicted": sum(1 for r in rows if r["p_contradicted"] > 0.5),
            "rows": rows,
        }
