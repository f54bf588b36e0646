"""Two steps of SFT and of DPO on tiny data change the model, and the adapters reload by name."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rolecraft.cli import app
from rolecraft.errors import RolecraftError
from rolecraft.examples import load_example
from rolecraft.train.common import adapter_chain, list_adapters, read_meta, resolve_adapter
from rolecraft.workspace import Workspace

pytestmark = pytest.mark.model

PROMPT = [{"role": "system", "content": "You are Mira Holloway, the lighthouse keeper of Skerrow."},
          {"role": "user", "content": "Do you have a pet?"}]
ALPACA = [
    {"instruction": "Name three colours of the sea.", "input": "", "output": "Grey, green and deep blue."},
    {"instruction": "Say which number is larger.", "input": "7 or 12", "output": "12 is larger than 7."},
    {"instruction": "Do you have a pet?", "input": "", "output": "Yes: Barnacle, a one-eyed grey cat."},
]
PAIRS = [
    {"prompt": PROMPT, "chosen": "Yes, my cat Barnacle sleeps by the lamp.",
     "rejected": "As an AI language model, I do not have pets."},
    {"prompt": [PROMPT[0], {"role": "user", "content": "Where do you live?"}],
     "chosen": "In the keeper's cottage on Skerrow.", "rejected": "Mira Holloway lives in a big city."},
]


def logits(llm, messages) -> list[float]:  # noqa: ANN001
    import torch

    enc = llm.tokenizer([llm.render(messages)], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        return llm.model(**enc).logits[0, -1].float().tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One workspace with Mira, an SFT adapter (2 steps) and a DPO adapter on top of it (2 steps)."""
    import torch

    from rolecraft.train.dpo import DpoConfig, train_dpo
    from rolecraft.train.sft import SftConfig, train_sft

    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("home")
    ws = Workspace(home)
    slug = ws.add(load_example("mira"))
    data = home / "alpaca.json"
    data.write_text(json.dumps(ALPACA))
    adapters = ws.path(slug) / "adapters"
    # a high learning rate so that two steps visibly move a 135M model
    sft = train_sft(SftConfig(output_dir=adapters / "sft", alpaca=[data], steps=2, batch_size=2,
                              learning_rate=5e-3), progress=False)
    dpo = train_dpo(DpoConfig(output_dir=adapters / "dpo", parent=adapters / "sft", steps=2, batch_size=2,
                              learning_rate=5e-3), PAIRS, progress=False)
    return {"home": home, "ws": ws, "slug": slug, "sft": sft, "dpo": dpo, "adapters": adapters}


def test_adapters_land_in_the_workspace(trained: dict) -> None:
    assert list_adapters(trained["ws"].path(trained["slug"])) == ["dpo", "sft"]
    assert trained["sft"]["examples"] == 3 and len(trained["sft"]["losses"]) == 2
    assert trained["dpo"]["pairs"] == 2 and len(trained["dpo"]["losses"]) == 2
    meta = read_meta(trained["adapters"] / "dpo")
    assert meta["parent"] == "sft" and meta["config"]["max_prompt_length"] == 320
    assert meta["config"]["lora"]["alpha"] == 16
    assert [p.name for p in adapter_chain(trained["adapters"] / "dpo")] == ["sft", "dpo"]
    cfg = json.loads((trained["adapters"] / "sft" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16


def test_adapters_change_the_output_and_reload_by_name(trained: dict, local_llm) -> None:  # noqa: ANN001
    from rolecraft.llm.local import LocalLLM

    base = logits(local_llm, PROMPT)
    ws, slug = trained["ws"], trained["slug"]
    for name in ("sft", "dpo"):
        path = resolve_adapter(name, ws, slug)
        assert path == trained["adapters"] / name
        tuned = LocalLLM(adapter=path)
        diff = max(abs(a - b) for a, b in zip(base, logits(tuned, PROMPT), strict=True))
        assert diff > 1e-2, f"{name} adapter did not change the logits"
        assert isinstance(tuned.chat(PROMPT, temperature=0, max_new_tokens=12), str)
    # 'character/name' works without a character, a bare name when it is unique in the workspace
    assert resolve_adapter(f"{slug}/dpo", ws) == trained["adapters"] / "dpo"
    assert resolve_adapter("sft", ws) == trained["adapters"] / "sft"
    with pytest.raises(RolecraftError, match="No LoRA adapter 'nope'"):
        resolve_adapter("nope", ws, slug)


def test_chat_cli_loads_adapter_by_name(trained: dict) -> None:
    runner = CliRunner()
    home = str(trained["home"])
    result = runner.invoke(app, ["chat", trained["slug"], "--adapter", "dpo", "--once", "Do you have a pet?",
                                 "--max-tokens", "8", "--temperature", "0", "--home", home])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["chat", trained["slug"], "--adapter", "nope", "--once", "Hi", "--home", home])
    assert result.exit_code == 1 and "No LoRA adapter 'nope'" in result.output
