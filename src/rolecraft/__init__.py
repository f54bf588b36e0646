"""rolecraft: persona-driven role-play characters that stay faithful to every fact of their persona."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from .errors import RolecraftError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["APCScorer", "RolecraftError", "__version__"]


def __getattr__(name: str):
    # Heavy classes load on first use, so `import rolecraft` stays fast (no torch import).
    if name == "APCScorer":
        from .apc import APCScorer

        return APCScorer
    raise AttributeError(f"module 'rolecraft' has no attribute {name!r}")
