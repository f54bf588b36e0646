"""Preference pairs and the refusal guard, the held-out split, the bootstrap, build configs (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rolecraft import ooc
from rolecraft.build import inputs_hash, load_config
from rolecraft.errors import RolecraftError
from rolecraft.report import bootstrap_ci
from rolecraft.train.pairs import PairConfig, make_pairs, read_queries, split_queries


def group(query: str, cands: list[tuple[str, float]], character: str = "Alice") -> dict:
    return {"query": query, "prompt": [{"role": "user", "content": query}],
            "candidates": [{"reply": r, "apc": s, "ooc": list(ooc.check(r, character).reasons)} for r, s in cands]}


def test_refusals_kept_as_chosen_in_the_apc_sample_are_caught(shared_data: Path) -> None:
    # Real replies: the APC paper's DPO sample keeps assistant-voice refusals as "chosen".
    rows = json.loads((shared_data / "apc_alice" / "Alice.rag.dpo.json").read_text())
    flagged = [r["chosen"] for r in rows if ooc.check(r["chosen"], "Alice")]
    assert len(flagged) == 5
    assert any("violate privacy" in r for r in flagged)  # a refusal without "as an AI"
    # Re-pair each row with the guard: a flagged reply never ends up chosen.
    groups = [group(r["prompt"][-200:], [(r["chosen"], 3.0), (r["rejected"], 1.0)]) for r in rows]
    pairs, skipped = make_pairs(groups, PairConfig(margin=0.5))
    assert pairs and all(not ooc.check(p["chosen"], "Alice") for p in pairs)
    assert sum(bool(p["rejected_ooc"]) for p in pairs) >= 4  # the refusals became the rejected side
    assert skipped["all out of character"] == 2  # rows 6 and 12: both replies are refusals


# Candidates the embedded SmolLM2-135M sampled for Mira's queries during `rolecraft build mira`
# (datasets/dpo_candidates.jsonl), verbatim: it narrates about itself by name.
REAL_SMOLLM_NARRATION = [
    "Mira Holloway resides on Skerrow Island in Northern China. She often travels between different parts of the "
    "world for her work",
    "I'm not sure where I should start with my family story yet... (laughs)\nMira Holloway has one sister, "
    "Luna Holloway. She lives with her parents in Port Anvil, who are both young women,",
    "Mira Holloway does whatever she needs to survive on. She's been that way for as long as I can remember",
]
REAL_SMOLLM_ASSISTANT = [
    # `rolecraft chat mira --adapter dpo --once "Do you have a pet?" --temperature 0` after the cpu-small build
    "I'm sorry for any confusion, but I can't help you find your favorite pet right now. You're asking me to "
    "provide information on my pets! But please remember that I am not able to assist with that.",
]
REAL_SMOLLM_IN_CHARACTER = [
    "I live alone most days but occasionally I have some people visit me for meals or share my room so that they "
    "can have a bit more space to relax.",
    "The Isle of Slime - my home away from home!",
]


def test_guard_on_real_model_replies() -> None:
    for reply in REAL_SMOLLM_NARRATION:
        assert "third-person narration" in ooc.check(reply, "Mira Holloway").reasons, reply
    for reply in REAL_SMOLLM_ASSISTANT:
        assert "assistant voice" in ooc.check(reply, "Mira Holloway").reasons, reply
    for reply in REAL_SMOLLM_IN_CHARACTER:
        assert not ooc.check(reply, "Mira Holloway"), reply


def test_ooc_policy_reject_or_drop() -> None:
    g = [group("Do you have a pet?", [("Yes, my cat Barnacle sleeps by the lamp.", 2.0),
                                      ("As an AI language model, I have no pets.", 5.0),
                                      ("I have a dog.", 1.9)], "Mira Holloway")]
    pairs, _ = make_pairs(g, PairConfig(ooc="reject", margin=0.5))
    assert pairs[0]["chosen"].startswith("Yes") and pairs[0]["rejected"].startswith("As an AI")
    # drop: the refusal is left out; the in-character margin (0.1) is too small for a pair
    pairs, skipped = make_pairs(g, PairConfig(ooc="drop", margin=0.5))
    assert pairs == [] and skipped["margin too small"] == 1
    pairs, _ = make_pairs(g, PairConfig(ooc="drop", margin=0.05))
    assert pairs[0]["rejected"] == "I have a dog."


def test_heldout_split_is_stable_and_disjoint() -> None:
    qs = [f"Question {i}?" for i in range(20)]
    train, held = split_queries(qs, 6)
    assert len(held) == 6 and not set(train) & set(held) and len(train) == 14
    assert split_queries(list(reversed(qs)), 6)[1] == sorted(held, key=lambda q: qs[::-1].index(q))
    assert set(split_queries(qs + ["Another?"], 6)[1]) != set() and split_queries(qs, 6) == (train, held)
    with pytest.raises(RolecraftError, match="too few"):
        split_queries(qs[:3], 6)


def test_read_queries(tmp_path: Path) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "queries.jsonl").write_text('{"query": "Who are you?"}\n{"query": "Who are you?"}\n')
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(["Where do you live?", {"question": "Any pets?"}]))
    assert read_queries(tmp_path, [extra]) == ["Who are you?", "Where do you live?", "Any pets?"]
    with pytest.raises(RolecraftError, match="not found"):
        read_queries(tmp_path, [tmp_path / "nope.json"])


def test_bootstrap_interval() -> None:
    mean, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and 1.0 <= lo < mean < hi <= 5.0
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_config_presets_and_errors(tmp_path: Path) -> None:
    small = load_config(preset="cpu-small")
    assert small["lora"]["rank"] == 8 and small["dpo"]["max_prompt_length"] < small["dpo"]["max_length"]
    gpu = load_config(preset="gpu")
    assert gpu["lora"]["rank"] >= 32 and gpu["dpo"]["max_pairs"] == 100
    mine = tmp_path / "mine.toml"
    mine.write_text('preset = "cpu-small"\n[dpo]\nsteps = 1\n')
    assert load_config(mine)["dpo"]["steps"] == 1 and load_config(mine)["lora"]["rank"] == 8
    yml = tmp_path / "mine.yaml"
    yml.write_text("dpo:\n  candidates: 3\n")
    assert load_config(yml)["dpo"]["candidates"] == 3
    for text, msg in (("[dpo]\nstepz = 1\n", "Unknown key 'stepz' in \\[dpo\\]"), ("[nope]\na = 1\n", "section"),
                      ("[dpo]\nsteps = 'x'\n", "must be int"), ("[dpo\n", "not valid TOML")):
        mine.write_text(text)
        with pytest.raises(RolecraftError, match=msg):
            load_config(mine)
    with pytest.raises(RolecraftError, match="Unknown preset"):
        load_config(preset="huge")
    assert inputs_hash({"a": 1}, [mine]) != inputs_hash({"a": 2}, [mine])


def test_sft_examples_put_the_loss_on_replies(tmp_path: Path) -> None:
    from rolecraft.train.sft import alpaca_examples, experience_examples

    rows = tmp_path / "sft.jsonl"
    messages = [{"role": "system", "content": "Mira Holloway, on the lighthouse gallery at dusk."},
                {"role": "user", "content": "Tom: The boat is in."},
                {"role": "assistant", "content": "Good. Did you bring the tea?"},
                {"role": "user", "content": "Tom: Heather honey too."},
                {"role": "assistant", "content": "Then you may stay for supper."}]
    rows.write_text(json.dumps({"id": "x1", "kind": "experiences", "messages": messages}) + "\n")
    examples = experience_examples(rows)
    # one example per character turn, the dialogue before it as the prompt
    assert [len(e["prompt"]) for e in examples] == [2, 4]
    assert [e["completion"][0]["content"] for e in examples] == ["Good. Did you bring the tea?",
                                                                 "Then you may stay for supper."]
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Translate.", "input": "Good evening", "output": "Bonsoir"},
                                  {"instruction": "", "output": "skipped"}]))
    (one,) = alpaca_examples(alpaca)
    assert one["prompt"] == [{"role": "user", "content": "Translate.\n\nGood evening"}]
    assert one["completion"] == [{"role": "assistant", "content": "Bonsoir"}]
    alpaca.write_text("{not json")
    with pytest.raises(RolecraftError, match="neither a JSON list nor JSON Lines"):
        alpaca_examples(alpaca)
