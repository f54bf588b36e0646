"""llama.cpp backend (llama-cpp-python): a fast CPU path for GGUF models, the embedded one by default.

Plain chats go through `create_chat_completion`. A prefill (trailing assistant message) is rendered
here with the model's own chat template and continued with `create_completion`, because llama.cpp's
chat API would close the assistant turn instead of continuing it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from .base import BaseLLM, Message, Sampling, StopStream, cut_at_stop, split_prefill
from .local import resolve_model_path

# Used when a GGUF carries no chat template (SmolLM2's own template is this ChatML).
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise RolecraftError(
            "The llamacpp backend needs llama-cpp-python: `pip install llama-cpp-python` or `make llamacpp`."
        ) from None
    return llama_cpp


class LlamaCppLLM(BaseLLM):
    """A GGUF model run in-process by llama.cpp."""

    def __init__(
        self,
        model: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        sampling: Sampling | None = None,
    ):
        super().__init__(sampling)
        llama_cpp = _import_llama_cpp()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = resolve_model_path(model)
        if path.is_dir() or path.suffix.lower() != ".gguf":
            raise RolecraftError(f"The llamacpp backend needs a .gguf file, not {path}")
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise RolecraftError(f"llama.cpp could not load {path}: {exc}") from None
        self.name = model or "smollm2"
        self.path = Path(path)
        self.context_window = n_ctx
        # One Llama object holds one KV cache: calls from several threads must take turns.
        self.lock = threading.Lock()
        self.template = Jinja2ChatFormatter(
            template=self.llm.metadata.get("tokenizer.chat_template") or _CHATML,
            eos_token=self._token_text(self.llm.token_eos()),
            bos_token=self._token_text(self.llm.token_bos()),
            add_generation_prompt=True,
        )

    def _token_text(self, token: int) -> str:
        if token < 0:  # the model has no such token
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def render(self, messages: list[Message]) -> str:
        """The prompt text: the chat template with an open assistant turn, plus any prefill."""
        convo, prefill = split_prefill(messages)
        return self.template(messages=convo).prompt + prefill

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.llm.tokenize(self.render(messages).encode("utf-8"), add_bos=False, special=True))

    @staticmethod
    def _kwargs(s: Sampling) -> dict[str, Any]:
        kw: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_new_tokens}
        if s.stop:
            kw["stop"] = list(s.stop)
        if s.seed is not None:
            kw["seed"] = s.seed
        if s.repetition_penalty != 1.0:
            kw["repeat_penalty"] = s.repetition_penalty
        return kw

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self.lock:
            # Forget the previous prompt: reusing its cache re-evaluates only the last token, whose
            # logits then differ slightly from a full evaluation, so greedy and seeded replies would
            # change from one call to the next.
            self.llm.reset()
            try:
                yield
            except ValueError as exc:  # llama.cpp reports a prompt longer than n_ctx this way
                raise RolecraftError(f"llama.cpp refused the request: {exc}") from None

    def _pieces(self, messages: list[Message], s: Sampling) -> Iterator[str]:
        """Streamed text pieces, from the chat API or, for a prefill, the completion API."""
        if split_prefill(messages)[1]:
            for chunk in self.llm.create_completion(self.render(messages), stream=True, **self._kwargs(s)):
                yield chunk["choices"][0]["text"]
        else:
            for chunk in self.llm.create_chat_completion(messages, stream=True, **self._kwargs(s)):
                yield chunk["choices"][0]["delta"].get("content") or ""

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        s = self._sampling(sampling, overrides)
        with self._guard():
            if split_prefill(messages)[1]:
                out = self.llm.create_completion(self.render(messages), **self._kwargs(s))
                text = out["choices"][0]["text"]
            else:
                out = self.llm.create_chat_completion(messages, **self._kwargs(s))
                text = out["choices"][0]["message"].get("content") or ""
        return cut_at_stop(text, s.stop)[0]

    def stream(
        self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any
    ) -> Iterator[str]:
        s = self._sampling(sampling, overrides)
        stops = StopStream(s.stop)
        with self._guard():
            for piece in self._pieces(messages, s):
                out = stops.feed(piece)
                if out:
                    yield out
                if stops.done:
                    return
        tail = stops.flush()
        if tail:
            yield tail
