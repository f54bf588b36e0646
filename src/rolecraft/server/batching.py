"""Several generations in one `model.generate` call on the local transformers backend, streamed per row.

Each row (one choice of one request) has its own stop strings, token limit and cancel flag. All of
that is checked in a stopping criterion, which transformers calls once per step with every row's
tokens so far: the row's new token is decoded there, its text handed to its job, and a finished or
cancelled row is reported done so generate pads it until the whole batch is over.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..llm.base import StopStream

if TYPE_CHECKING:
    from .engine import Job

MIN_TEMPERATURE = 1e-3  # below this, sampling divides logits into infinities: decode greedily instead


class _Row:
    def __init__(self, job: Job, index: int, tokenizer: Any, eos: set[int]):
        self.job, self.index, self.tokenizer, self.eos = job, index, tokenizer, eos
        self.ids: list[int] = []
        self.text = ""  # decoded so far (excluding a trailing partial character)
        self.stops = StopStream(job.sampling.stop)
        self.done = False

    def feed(self, token: int) -> bool:
        """Take one new token; True when this row is finished."""
        if self.done:
            return True
        if self.job.cancelled.is_set():
            self.close("cancelled")
        elif token in self.eos:
            self.close("stop")
        else:
            self.ids.append(token)
            self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True))
            if self.stops.done:
                self.close("stop")
            elif len(self.ids) >= self.job.sampling.max_new_tokens:
                self.close("length")
        return self.done

    def _emit(self, text: str) -> None:
        # Byte-level BPE may end a step inside a multi-byte character; wait for the rest of it.
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return
        new, self.text = text[len(self.text) :], text
        out = self.stops.feed(new)
        if out:
            self.job.piece(self.index, out)

    def close(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        if reason != "cancelled" and not self.stops.done:
            final = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if final.startswith(self.text):
                tail = self.stops.feed(final[len(self.text) :])
                tail += self.stops.flush()
                if tail:
                    self.job.piece(self.index, tail)
        self.job.finish(self.index, reason, len(self.ids))


class LocalBatcher:
    """Runs jobs together on a `LocalLLM` (anything with `model`, `tokenizer`, `render`, `device`)."""

    @staticmethod
    def supports(llm: Any) -> bool:
        return all(hasattr(llm, name) for name in ("model", "tokenizer", "render", "device"))

    def __init__(self, llm: Any, tokenizer_lock: threading.Lock):
        self.llm = llm
        self.tokenizer_lock = tokenizer_lock  # held for every tokenizer use; released while the model runs

    def _eos(self) -> set[int]:
        ids = getattr(self.llm.model.generation_config, "eos_token_id", None)
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.llm.tokenizer.eos_token_id is not None:
            ids.add(self.llm.tokenizer.eos_token_id)
        return ids

    def generate(self, jobs: list[Job]) -> None:
        """Generate every row of `jobs` in one batch; results go to the jobs as they come."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        llm, tokenizer = self.llm, self.llm.tokenizer
        eos = self._eos()
        rows = [_Row(job, i, tokenizer, eos) for job in jobs for i in range(job.n)]
        lock = self.tokenizer_lock
        with lock:
            prompts = {id(job): llm.render(job.messages) for job in jobs}
            tokenizer.padding_side = "left"  # new tokens line up at the end of every row
            texts = [prompts[id(r.job)] for r in rows]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(llm.device)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        for row, length in zip(rows, lengths, strict=True):
            row.job.prompt_tokens = int(length)

        class RowsDone(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                last = input_ids[:, -1].tolist()
                with lock:
                    done = [row.feed(token) for row, token in zip(rows, last, strict=True)]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        s = jobs[0].sampling  # jobs in one batch share their sampling settings (Job.batch_key)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(job.sampling.max_new_tokens for job in jobs),
            "pad_token_id": tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([RowsDone()]),
        }
        if s.temperature >= MIN_TEMPERATURE:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = s.repetition_penalty
        if s.seed is not None:
            torch.manual_seed(s.seed)
        with torch.inference_mode():
            llm.model.generate(**enc, **kwargs)
        with lock:
            for row in rows:  # generate stopped at the longest limit: the rest end by length
                row.close("length")
