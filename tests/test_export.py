"""Merge an adapter and write a GGUF: transformers and llama.cpp load it and reply as the merged model does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rolecraft.examples import load_example
from rolecraft.export import gguf_name, modelfile, permute_qk

PROMPT = [{"role": "system", "content": "You are Mira Holloway, the lighthouse keeper of Skerrow."},
          {"role": "user", "content": "Do you have a pet?"}]


def test_tensor_names_and_permutation() -> None:
    assert gguf_name("model.layers.3.self_attn.k_proj.weight") == "blk.3.attn_k.weight"
    assert gguf_name("model.embed_tokens.weight") == "token_embd.weight"
    assert gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    w = np.arange(4 * 8 * 3, dtype=np.float32).reshape(4 * 8, 3)  # 4 heads of dimension 8
    p = permute_qk(w, 4)
    assert p.shape == w.shape and not np.array_equal(p, w)
    assert np.array_equal(np.sort(p, axis=None), np.sort(w, axis=None))
    # within a head the two rotary halves are interleaved: row 1 of the head is row 4 of HF's layout
    assert np.array_equal(p[1], w[4]) and np.array_equal(p[2], w[1])


def test_modelfile_has_persona_as_system() -> None:
    text = modelfile(load_example("mira"), "mira.gguf", "<|im_start|>{{ x }}")
    assert text.startswith("FROM ./mira.gguf") and 'SYSTEM """You are Mira Holloway.' in text
    assert "Barnacle" in text and 'PARAMETER stop "<|im_end|>"' in text


@pytest.mark.model
def test_exported_gguf_matches_the_merged_model(tmp_path: Path, local_llm) -> None:  # noqa: ANN001
    import torch

    from rolecraft.export import export_model
    from rolecraft.llm.local import LocalLLM
    from rolecraft.train.sft import SftConfig, train_sft

    torch.set_num_threads(1)
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": "Do you have a pet?", "output": "Yes: Barnacle, a grey cat."}] * 2))
    adapter = tmp_path / "adapters" / "sft"
    train_sft(SftConfig(output_dir=adapter, alpaca=[data], steps=1, batch_size=2, learning_rate=5e-3), progress=False)
    files = export_model(load_example("mira"), adapter, tmp_path / "export", dtype="f16")
    assert files["gguf"].stat().st_size > 100_000_000 and "SYSTEM" in files["modelfile"].read_text()
    expected = LocalLLM(adapter=adapter).chat(PROMPT, temperature=0, max_new_tokens=16)
    # transformers reads the GGUF back (undoing the Q/K permutation): same greedy reply as the merged model
    assert LocalLLM(str(files["gguf"])).chat(PROMPT, temperature=0, max_new_tokens=16) == expected
    pytest.importorskip("llama_cpp")
    from rolecraft.llm.llamacpp import LlamaCppLLM

    reply = LlamaCppLLM(str(files["gguf"])).chat(PROMPT, temperature=0, max_new_tokens=16)
    assert reply.strip() and reply.split()[:3] == expected.split()[:3]
