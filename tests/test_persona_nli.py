"""Persona NLI rows built from ConvAI2 grounding data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rolecraft.errors import RolecraftError
from rolecraft.train.discriminators import read_examples
from rolecraft.train.persona_nli import (
    SOURCE,
    _denials,
    _exchanged,
    _neighbours,
    _swapped,
    build_persona_nli,
    edit_reply,
    negate,
    persona_nli_rows,
    third_person,
)


@pytest.mark.parametrize(
    ("fact", "expected"),
    [
        ("i love my two dogs.", "Mara loves Mara's two dogs."),
        ("i am a teacher.", "Mara is a teacher."),
        ("i also study languages.", "Mara also studies languages."),
        ("i do not like my job", "Mara does not like Mara's job."),
        ("i have three sisters.", "Mara has three sisters."),
        ("i watch tv and my cat sleeps.", "Mara watches tv and Mara's cat sleeps."),
        ("my favorite color is blue.", "Mara's favorite color is blue."),
        ("i just had surgery.", "Mara just had surgery."),  # past forms keep their tense
        ("i need glasses.", "Mara needs glasses."),  # "-eed" is not a past form
    ],
)
def test_facts_become_third_person_statements(fact: str, expected: str) -> None:
    assert third_person(fact, "Mara") == expected


def test_swaps_change_one_value_of_an_exclusive_kind() -> None:
    rng = random.Random(0)
    values = {"favorite:color": ["blue", "red"], "place:": ["ohio", "texas"], "job:": ["nurse", "engineer"]}
    assert _swapped("my favorite color is blue.", values, rng) == ("my favorite color is red.", "blue")
    assert _swapped("i live in ohio.", values, rng) == ("i live in texas.", "ohio")
    assert _swapped("i am a nurse.", values, rng) == ("i am an engineer.", "nurse")  # article follows
    new_age, old_age = _swapped("i am 30 years old.", values, rng)  # type: ignore[misc]
    assert old_age == "30" and abs(int(new_age.split()[2]) - 30) >= 6
    assert _swapped("i love cats.", values, rng) == ("i hate cats", "cats")
    assert _swapped("i hate mornings.", values, rng) == ("i love mornings", "mornings")
    # Not exclusive: a person may be a woman and a nurse, have one dog and other pets.
    assert _swapped("i am a woman.", values, rng) is None
    assert _swapped("i have one dog.", values, rng) is None
    assert _swapped("i read twenty books a year.", values, rng) is None


@pytest.mark.parametrize(
    ("fact", "denied"),
    [
        ("i like cats.", "i do not like cats"),
        ("i am a nurse.", "i am not a nurse"),
        ("i have two dogs.", "i do not have two dogs"),
        ("i have been to paris.", "i have never been to paris"),
        ("my favorite color is blue.", "my favorite color is not blue"),
        ("i also study languages.", "i do not study languages"),
        ("i was born in ohio.", "i was not born in ohio"),
        ("i just had surgery.", None),  # not "i do not had surgery"
        ("i used to work at a carnival.", None),
        ("i do not drive.", None),  # already negative
        ("horror movies are my favorites.", None),  # no simple shape to deny
    ],
)
def test_negate(fact: str, denied: str | None) -> None:
    assert negate(fact) == denied


def test_denials_label_each_direction() -> None:
    rows = _denials("i like cats.", "cats are the best !", ["i work at a bank ."], random.Random(3))
    (fact, answer, label1), (denied, answer2, label2), (denied2, original, label3) = rows
    assert (fact, label1) == ("i like cats.", "contradicted")
    assert (denied, label2) == ("i do not like cats", "entailed") and answer2 == answer
    assert "not like cats" in answer.lower() or "don't like cats" in answer.lower()
    assert (denied2, original, label3) == ("i do not like cats", "cats are the best !", "contradicted")
    assert _denials("i never swim.", "true", [], random.Random(0)) == []


def test_reply_edits_put_the_contradiction_in_the_reply() -> None:
    rng = random.Random(0)
    values = {"place:": ["ohio", "texas"], "job:": ["nurse", "engineer"]}
    assert edit_reply("i live in ohio.", "Ohio is cold now.", values, rng) == ("i live in texas.", "Texas is cold now.")
    assert edit_reply("i am a nurse.", "i work as a nurse .", values, rng) == (
        "i am an engineer.",
        "i work as an engineer .",
    )
    assert edit_reply("i love cats.", "i love my cats", values, rng) == ("i hate cats.", "i hate my cats")
    assert edit_reply("i am very tall.", "being tall helps at basketball", values, rng) == (
        "i am very short.",
        "being short helps at basketball",
    )
    # The exchanged word must be in the reply, and a negation would make the edit mean something else.
    assert edit_reply("i live in ohio.", "it is cold here", values, rng) is None
    assert edit_reply("i am very tall.", "i am not tall at all", values, rng) is None
    assert edit_reply("i read a lot.", "reading is fun", values, rng) is None  # nothing to exchange


def test_exchanged_words() -> None:
    assert _exchanged("i live in ohio.", "i live in new york.") == ("ohio", "new york")
    assert _exchanged("i am a nurse.", "i am an engineer.") == ("a nurse", "an engineer")
    assert _exchanged("i love cats", "i hate cats") == ("love", "hate")


def _grounding_file(path: Path) -> Path:
    def rec(fact: str, label: int, turn: int, response: str, dialog: str = "d1") -> dict:
        return {
            "fact": fact,
            "question": "hi there , what do you like ?",
            "label": label,
            "response": response,
            "dialog": dialog,
            "turn": turn,
            "source": "convai2_grounding",
            "split": "valid",
        }

    rows = [
        rec("my favorite color is blue.", 1, 1, "blue , like the sea . what about you ?"),
        rec("i live in ohio.", 0, 1, "blue , like the sea . what about you ?"),
        rec("i live in ohio.", 1, 2, "it is cold here in the summer"),  # used, but names no place
        rec("my favorite color is blue.", 0, 2, "it is cold here in the summer"),
        rec("my favorite color is red.", 0, 1, "i paint houses", dialog="d2"),
        rec("i live in texas.", 0, 1, "i paint houses", dialog="d2"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_rows_cover_all_three_labels(tmp_path: Path) -> None:
    rows = persona_nli_rows([_grounding_file(tmp_path / "g.jsonl")], negations=0.0)
    by_label = {label: [r for r in rows if r["label"] == label] for label in ("entailed", "neutral", "contradicted")}
    names = {r["character"] for r in rows}
    assert len(names) == 1  # one persona per dialogue
    name = names.pop()
    assert [r["statement"] for r in by_label["entailed"]] == [
        f"{name}'s favorite color is blue.",
        f"{name} lives in ohio.",
    ]
    assert {r["statement"] for r in by_label["neutral"]} == {
        f"{name} lives in ohio.",
        f"{name}'s favorite color is blue.",
    }
    # Only the reply that names its value gets a contradiction; "red" is the only other colour seen.
    assert [(r["statement"], r["response"]) for r in by_label["contradicted"]] == [
        (f"{name}'s favorite color is red.", "blue , like the sea . what about you ?")
    ]
    assert all(r["source"] == SOURCE and r["query"] for r in rows)


def test_reply_edit_rows_keep_the_statement_and_change_the_reply(tmp_path: Path) -> None:
    plain = persona_nli_rows([_grounding_file(tmp_path / "g.jsonl")], negations=0.0)
    rows = persona_nli_rows([_grounding_file(tmp_path / "g.jsonl")], negations=0.0, reply_edits=1.0)
    name = rows[0]["character"]
    added = [(r["statement"], r["response"], r["label"]) for r in rows if r not in plain]
    # Only the first reply names its fact's value ("blue"); red is the other colour seen.
    assert added == [
        (f"{name}'s favorite color is blue.", "red , like the sea . what about you ?", "contradicted"),
        (f"{name}'s favorite color is red.", "red , like the sea . what about you ?", "entailed"),
    ]
    assert len(rows) == len(plain) + 2


def test_built_file_is_nli_training_data(tmp_path: Path) -> None:
    out = build_persona_nli([_grounding_file(tmp_path / "g.jsonl")], tmp_path / "out" / "persona.jsonl", negations=1.0)
    examples = read_examples(out, "nli")
    # With every used fact denied too, each gives a denial row of each direction.
    assert sum("not" in e.statement for e in examples) == 4
    assert {e.label for e in examples} == {"entailed", "neutral", "contradicted"}
    assert all(e.character and e.response and e.source == SOURCE for e in examples)


def test_bad_grounding_files_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(RolecraftError, match="does not exist"):
        persona_nli_rows([tmp_path / "missing.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"fact": "i swim.", "label": 1}) + "\n", encoding="utf-8")
    with pytest.raises(RolecraftError, match=r"line 1: missing field\(s\) dialog, question, response, turn"):
        persona_nli_rows([bad])


def test_compound_statements_join_a_fact_the_reply_leaves_alone(tmp_path: Path) -> None:
    rows = persona_nli_rows([_grounding_file(tmp_path / "g.jsonl")], negations=0.0, compound=1.0)
    name = rows[0]["character"]
    entailed = [r["statement"] for r in rows if r["label"] == "entailed"]
    # Each used fact gets the turn's unused fact joined, never itself.
    assert entailed == [
        f"{name}'s favorite color is blue, and {name} lives in ohio.",
        f"{name} lives in ohio, and {name}'s favorite color is blue.",
    ]
    plain = persona_nli_rows([_grounding_file(tmp_path / "g.jsonl")], negations=0.0)
    assert [r["label"] for r in rows] == [r["label"] for r in plain]


def test_shipped_nli_stages_chain_and_end_on_persona_rows(tmp_path: Path) -> None:
    from rolecraft.train.discriminators import persona_nli_file, shipped_configs

    configs = shipped_configs(tmp_path / "data", tmp_path / "runs")
    nli = [c for c in configs if c.task == "nli"]
    assert [Path(c.output_dir).name for c in nli] == ["nli-1", "nli-2", "nli-3", "nli-4"]
    for before, after in zip(nli, nli[1:], strict=False):
        assert Path(after.init_from) == Path(before.output_dir)
    last = nli[-1]
    assert persona_nli_file(tmp_path / "runs") in [Path(p) for p in last.train_files]
    assert SOURCE in last.sources and last.premise_as == "reply"


def test_reproduce_runs_every_nli_stage_on_tiny_data(tmp_path: Path) -> None:
    import torch

    from rolecraft.discriminators import Discriminator
    from rolecraft.train.discriminators import calibration_file, persona_nli_file, reproduce_shipped

    data, runs = tmp_path / "data", tmp_path / "runs"
    labels = ["entailment", "neutral", "contradiction"]
    pairs = [
        {"premise": f"A man walks {i} dogs in the park.", "hypothesis": f"Someone is outside with {i} animals.",
         "label": labels[i % 3], "source": source, "split": "dev"}
        for source in ("snli", "mnli", "dnli2024_bnc") for i in range(12)
    ]  # fmt: skip
    (data / "nli").mkdir(parents=True)
    (data / "nli" / "nli_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    (data / "relevance").mkdir()
    _grounding_file(data / "relevance" / "relevance_convai2_persona_valid.jsonl")
    _grounding_file(data / "relevance" / "relevance_convai2_persona_test.jsonl")  # the calibration rows
    (data / "apc_alice").mkdir()
    alice = [{"character": "Alice", "statement": "Alice plays the guitar.", "query": "What do you play?",
              "response": "I play the guitar every day.", "label": "entailed"}]  # fmt: skip
    (data / "apc_alice" / "Alice.nli.v2.json").write_text(json.dumps(alice), encoding="utf-8")

    threads = torch.get_num_threads()
    try:
        results = reproduce_shipped(data, runs, tasks=("nli",), device="cpu")
    finally:
        torch.set_num_threads(threads)  # the stages set their own thread counts
    assert persona_nli_file(runs).is_file() and calibration_file(runs).is_file()
    for stage in ("nli-1", "nli-2", "nli-3", "nli-4"):
        assert (runs / stage / "adapter.safetensors").is_file(), stage
    record = json.loads((runs / "nli-4" / "training.json").read_text())
    assert SOURCE in record["sources"] and SOURCE in record["non_commercial_sources"]
    assert SOURCE in record["calibration_sources"]
    assert results["nli"]["eval"]  # Alice scored at the end
    assert results["nli"]["calibration"]["rows"] == sum(1 for _ in calibration_file(runs).open())
    model = Discriminator.load(runs / "nli-4")
    assert model.config.calibration_weights is not None  # only the last stage is calibrated
    assert Discriminator.load(runs / "nli-3").config.calibration_weights is None
    assert model.predict_proba(alice).shape == (1, 3)


def test_hard_neutrals_pair_a_reply_with_a_similar_fact_of_another_persona(tmp_path: Path) -> None:
    def rec(fact: str, label: int, response: str, dialog: str) -> dict:
        return {"fact": fact, "question": "what do you do for fun ?", "label": label, "response": response,
                "dialog": dialog, "turn": 1, "split": "valid"}  # fmt: skip

    path = tmp_path / "g.jsonl"
    rows = [
        rec("i like to swim.", 1, "i swim every morning before work .", "a"),
        rec("i work in a bank.", 0, "i swim every morning before work .", "a"),
        rec("i like to ski.", 0, "i build model ships .", "b"),
        rec("my favorite color is red.", 0, "i build model ships .", "b"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plain = persona_nli_rows([path], negations=0.0)
    hard = persona_nli_rows([path], negations=0.0, hard_neutrals=1.0)
    (extra,) = [r for r in hard if r not in plain]
    assert extra["label"] == "neutral" and extra["statement"].endswith("likes to ski.")
    assert extra["response"] == "i swim every morning before work ."
    # A fact of an exclusive kind is never a hard neutral: it would contradict, not leave neutral.
    near = _neighbours(["i like to swim.", "i like to ski.", "my favorite sport is swimming."])
    assert near["i like to swim."] == ["i like to ski."] and "my favorite sport is swimming." not in near
