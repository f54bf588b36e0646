"""Merge a LoRA adapter into its model and write a GGUF file plus an Ollama Modelfile.

No HF→GGUF converter ships on PyPI, so this is a small one for Llama-architecture models (SmolLM2
is one): the metadata and tokenizer keys are copied from a GGUF of the same base model (by default
the embedded SmolLM2 file) and the tensors are replaced by the merged weights, in f16 (f32 for the
norms) or f32. llama.cpp stores Llama's Q and K projections with the rotary halves interleaved
differently from HF; the same permutation as llama.cpp's converter is applied to them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RolecraftError

_SKIP_KEYS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.file_type",
              "general.quantization_version", "general.name"}
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary layout (two halves) to llama.cpp's (interleaved pairs), as its converter does."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str | None:
    """The GGUF tensor name of an HF Llama parameter (None: not stored, e.g. rotary buffers)."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if m and m.group(2) in _LAYER:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}"
    return None


def merged_model(model: str | None, adapter: Path | None) -> tuple[Any, Any]:
    """The base model in fp32 with the adapter chain merged into its weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hf import quiet_loading
    from .train.common import base_folder, merge_chain

    folder = base_folder(model)
    with quiet_loading():
        net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter is not None:
        net = merge_chain(net, Path(adapter))
    return net.eval(), AutoTokenizer.from_pretrained(folder)


def write_gguf(net: Any, template: Path, target: Path, dtype: str = "f16", name: str | None = None) -> Path:
    """Write `net` (an HF Llama model) to `target`, with the metadata and tokenizer of `template`."""
    import gguf

    if dtype not in ("f16", "f32"):
        raise RolecraftError(f"GGUF dtype must be f16 or f32, not {dtype!r}")
    reader = gguf.GGUFReader(str(template))
    arch = reader.fields["general.architecture"].contents()
    cfg = net.config
    if arch != "llama" or getattr(cfg, "model_type", "") != "llama":
        raise RolecraftError(f"GGUF export supports Llama-architecture models only (template {arch}, model "
                             f"{getattr(cfg, 'model_type', '?')}); convert others with llama.cpp's converter.")
    for key, value in (("llama.block_count", cfg.num_hidden_layers), ("llama.embedding_length", cfg.hidden_size),
                       ("llama.vocab_size", cfg.vocab_size)):
        if key in reader.fields and int(reader.fields[key].contents()) != int(value):
            raise RolecraftError(f"The template GGUF {template} is not of this model ({key} "
                                 f"{reader.fields[key].contents()} ≠ {value}); give --template-gguf of the base model.")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        for key, field in reader.fields.items():
            if key in _SKIP_KEYS or key == "general.architecture":  # the writer adds the architecture itself
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
        writer.add_name(name or str(reader.fields["general.name"].contents()))
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        for hf_name, tensor in net.state_dict().items():
            out_name = gguf_name(hf_name)
            if out_name is None or (tied and out_name == "output.weight"):
                continue
            w = tensor.detach().float().cpu().numpy()
            if out_name.endswith("attn_q.weight"):
                w = permute_qk(w, n_head)
            elif out_name.endswith("attn_k.weight"):
                w = permute_qk(w, n_kv)
            w = w.astype(np.float16 if dtype == "f16" and w.ndim > 1 else np.float32)
            writer.add_tensor(out_name, np.ascontiguousarray(w))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(target)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return target


def modelfile(character: Any, gguf_file: str, template_text: str = "", temperature: float = 0.3,
              repeat_penalty: float = 1.15) -> str:
    """An Ollama Modelfile: the GGUF, the ChatML template when the model uses it, the persona as SYSTEM."""
    from .agent import SYSTEM_TEMPLATE

    system = SYSTEM_TEMPLATE.format(name=character.name, facts="\n".join(f"- {s}" for s in character.statement_texts))
    lines = [f"FROM ./{gguf_file}", ""]
    if "<|im_start|>" in template_text:
        lines += ['TEMPLATE """{{ if .System }}<|im_start|>system',
                  "{{ .System }}<|im_end|>",
                  "{{ end }}{{ if .Prompt }}<|im_start|>user",
                  "{{ .Prompt }}<|im_end|>",
                  "{{ end }}<|im_start|>assistant",
                  '{{ .Response }}<|im_end|>"""', "", 'PARAMETER stop "<|im_end|>"']
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER repeat_penalty {repeat_penalty}", "",
              'SYSTEM """' + system.replace('"""', '"\u200b""') + '"""', ""]
    return "\n".join(lines)


def export_model(character: Any, adapter: Path | None, out_dir: Path, model: str | None = None,
                 template: Path | None = None, dtype: str = "f16") -> dict[str, Path]:
    """Merge, write `<slug>.gguf` and `Modelfile` into `out_dir`; returns their paths."""
    from .llm.local import embedded_gguf
    from .paths import atomic_write_text

    if template is None:
        if model not in (None, "", "smollm2") and str(model).endswith(".gguf"):
            template = Path(model)
        elif model in (None, "", "smollm2"):
            template = embedded_gguf()
        else:
            raise RolecraftError("Give --template-gguf: a GGUF of the base model, to copy its tokenizer and metadata.")
    if not Path(template).is_file():
        raise RolecraftError(f"Template GGUF not found: {template}")
    net, _ = merged_model(model, adapter)
    out_dir = Path(out_dir)
    gguf_path = write_gguf(net, Path(template), out_dir / f"{character.slug}.gguf", dtype,
                           name=f"{character.name} (rolecraft{', ' + Path(adapter).name if adapter else ''})")
    import gguf

    reader = gguf.GGUFReader(str(template))
    field = reader.fields.get("tokenizer.chat_template")
    chat_template = str(field.contents()) if field is not None else ""
    mf = out_dir / "Modelfile"
    atomic_write_text(mf, modelfile(character, gguf_path.name, chat_template))
    return {"gguf": gguf_path, "modelfile": mf}
