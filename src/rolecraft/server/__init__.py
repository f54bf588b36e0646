"""HTTP serving: an OpenAI-compatible API over rolecraft models and characters, and a web chat page.

Names are imported on first use, so `rolecraft --help` does not pay for FastAPI.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ApiError": ".protocol",
    "install_error_handlers": ".protocol",
    "Limits": ".openai_api",
    "create_app": ".openai_api",
    "running_server": ".openai_api",
    "serve": ".openai_api",
    "ServerConfig": ".characters",
    "create_character_app": ".characters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
