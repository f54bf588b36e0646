"""LLM backends behind one protocol; `load_llm` picks one by name."""

from __future__ import annotations

from pathlib import Path

from ..errors import RolecraftError
from .base import LLM, BaseLLM, Message, Sampling, cut_at_stop, split_prefill

BACKENDS = ("local", "llamacpp", "openai")


def load_llm(
    backend: str = "local",
    model: str | None = None,
    adapter: str | Path | None = None,
    **kwargs: object,
) -> LLM:
    """Build a backend. `model`: 'smollm2' (embedded), a local folder/.gguf, or a served model id."""
    if backend == "local":
        from .local import LocalLLM

        if adapter and not Path(adapter).expanduser().is_dir():  # 'character/name', or a name unique in the workspace
            from ..train.common import resolve_adapter

            adapter = resolve_adapter(adapter)

        return LocalLLM(model, adapter=adapter, **kwargs)  # type: ignore[arg-type]
    if backend == "llamacpp":
        from .llamacpp import LlamaCppLLM

        if adapter:
            raise RolecraftError("The llamacpp backend takes a merged GGUF, not a LoRA adapter folder.")
        return LlamaCppLLM(model, **kwargs)  # type: ignore[arg-type]
    if backend == "openai":
        from .openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(model, **kwargs)  # type: ignore[arg-type]
    raise RolecraftError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


__all__ = ["LLM", "BaseLLM", "Message", "Sampling", "cut_at_stop", "split_prefill", "load_llm", "BACKENDS"]
