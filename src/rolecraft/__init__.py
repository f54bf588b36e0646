"""rolecraft: persona-driven role-play characters that stay faithful to every fact of their persona."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from .errors import RolecraftError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["RolecraftError", "__version__"]
