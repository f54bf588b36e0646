"""HTTP serving: an OpenAI-compatible API over rolecraft models."""

from __future__ import annotations

from .openai_api import ApiError, create_app, install_error_handlers, running_server, serve

__all__ = ["ApiError", "create_app", "install_error_handlers", "running_server", "serve"]
