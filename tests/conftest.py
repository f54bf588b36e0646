"""Shared fixtures for the test suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The datasets live beside the repository (../shared/data), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared datasets; tests that need them are skipped where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def local_llm() -> Any:
    """The embedded model, loaded once for every test marked `model`."""
    from rolecraft.llm.local import LocalLLM

    return LocalLLM()


@pytest.fixture(scope="session")
def apc_scorer() -> Any:
    """The APC scorer on the shipped discriminators, loaded once (a few seconds)."""
    from rolecraft.apc import APCScorer

    return APCScorer.pretrained(device="cpu")
