"""APC (Active-Passive Constraint) faithfulness of replies to every persona statement.

For one user message and one reply, each statement contributes

    P(irrelevant) * (1 - P(contradicted))  +  P(relevant) * P(entailed)

A statement the message is about ("active") must be expressed by the reply; any other statement
("passive") only must not be contradicted. The APC score of a reply is the sum over statements.
Relevance depends only on (statement, message), so it is computed once and shared by all replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .discriminators import Discriminator
from .errors import RolecraftError


@dataclass(frozen=True)
class StatementRow:
    """One statement's probabilities and its share of the APC score for one reply."""

    statement: str
    p_relevant: float
    p_entailed: float
    p_neutral: float
    p_contradicted: float
    active: bool  # the message is about this statement (p_relevant > 0.5)
    contribution: float


@dataclass(frozen=True)
class APCReport:
    """The APC score of one reply, with a row per statement."""

    response: str
    total: float
    mean: float
    rows: list[StatementRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def contribution(p_relevant: np.ndarray, p_entailed: np.ndarray, p_contradicted: np.ndarray) -> np.ndarray:
    """Expected constraint satisfaction: passive -> not contradicted, active -> entailed."""
    return (1.0 - p_relevant) * (1.0 - p_contradicted) + p_relevant * p_entailed


def _statement_list(statements: Sequence[str]) -> list[str]:
    if isinstance(statements, str):
        raise RolecraftError("statements must be a list of strings, not a single string.")
    out = list(statements)
    if not all(isinstance(s, str) for s in out):
        raise RolecraftError("Every persona statement must be a string.")
    return out


def _response_list(responses: Sequence[str] | str) -> list[str]:
    # A single reply is accepted as a convenience; the result is still one value per reply.
    out = [responses] if isinstance(responses, str) else list(responses)
    if not all(isinstance(r, str) for r in out):
        raise RolecraftError("Every reply must be a string.")
    return out


class APCScorer:
    """Scores replies against all persona statements with a relevance and an NLI discriminator."""

    def __init__(self, relevance: Discriminator, nli: Discriminator, batch_size: int = 64) -> None:
        if relevance.task != "relevance" or nli.task != "nli":
            raise RolecraftError(
                "APCScorer needs a relevance discriminator and an NLI discriminator, in that order."
            )
        self.relevance = relevance
        self.nli = nli
        self.batch_size = batch_size
        self._relevant = relevance.labels.index("relevant")
        self._nli_columns = [nli.labels.index(name) for name in ("entailed", "neutral", "contradicted")]

    @classmethod
    def pretrained(cls, device: str | None = None, dtype: str = "auto") -> APCScorer:
        """The scorer built from the discriminators shipped with rolecraft (offline).

        dtype "auto" runs them in bfloat16 where the hardware supports it natively (see
        `rolecraft.discriminators.compute_dtype`); pass "float32" for the exact training precision.
        """
        return cls(
            Discriminator.pretrained("relevance", device, dtype), Discriminator.pretrained("nli", device, dtype)
        )

    # ----- the two probability tables ------------------------------------------------------------
    def relevance_proba(
        self, statements: Sequence[str], query: str, character: str | None = None
    ) -> np.ndarray:
        """P(relevant) per statement for this user message (one batched pass)."""
        statements = _statement_list(statements)
        rows = [{"character": character, "statement": s, "query": query} for s in statements]
        return self.relevance.predict_proba(rows, batch_size=self.batch_size)[:, self._relevant]

    def nli_proba(
        self, statements: Sequence[str], query: str, responses: Sequence[str], character: str | None = None
    ) -> np.ndarray:
        """P(entailed, neutral, contradicted) as an array (replies x statements x 3)."""
        statements, responses = _statement_list(statements), _response_list(responses)
        rows = [
            {"character": character, "statement": s, "query": query, "response": r}
            for r in responses
            for s in statements
        ]
        proba = self.nli.predict_proba(rows, batch_size=self.batch_size)[:, self._nli_columns]
        return proba.reshape(len(responses), len(statements), 3)

    # ----- scores --------------------------------------------------------------------------------
    def report(
        self,
        statements: Sequence[str],
        query: str,
        responses: Sequence[str] | str,
        character: str | None = None,
    ) -> list[APCReport]:
        """One APCReport per reply, in the order given."""
        statements, responses = _statement_list(statements), _response_list(responses)
        if not responses:
            return []
        if not statements:
            return [APCReport(r, 0.0, 0.0, []) for r in responses]
        p_rel = self.relevance_proba(statements, query, character)
        p_nli = self.nli_proba(statements, query, responses, character)
        reports = []
        for response, table in zip(responses, p_nli, strict=True):
            contrib = contribution(p_rel, table[:, 0], table[:, 2])
            rows = [
                StatementRow(
                    statement=s,
                    p_relevant=float(p_rel[i]),
                    p_entailed=float(table[i, 0]),
                    p_neutral=float(table[i, 1]),
                    p_contradicted=float(table[i, 2]),
                    active=bool(p_rel[i] > 0.5),
                    contribution=float(contrib[i]),
                )
                for i, s in enumerate(statements)
            ]
            total = float(sum(row.contribution for row in rows))
            reports.append(APCReport(response, total, total / len(rows), rows))
        return reports

    def score(
        self,
        statements: Sequence[str],
        query: str,
        responses: Sequence[str] | str,
        character: str | None = None,
    ) -> list[float]:
        """The APC total of each reply (higher is more faithful)."""
        return [r.total for r in self.report(statements, query, responses, character)]

    def rank(
        self, statements: Sequence[str], query: str, top_k: int = 5, character: str | None = None
    ) -> list[tuple[int, float]]:
        """The `top_k` statements most relevant to `query` as (index, P(relevant)), best first."""
        return self.relevance.rank(_statement_list(statements), query, top_k, character)
