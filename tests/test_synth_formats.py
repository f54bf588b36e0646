"""What the steps write: rows the discriminator trainer reads as they are, Character-LLM dialogues and
SFT chat rows, Chinese characters — and (marked `model`) the embedded model as a real teacher."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from test_synth_jobs import make_target, rows, teacher
from test_synth_teacher import ScriptedLLM

from rolecraft.llm.openai_compat import OpenAICompatLLM
from rolecraft.server.openai_api import create_app, running_server
from rolecraft.synth import synthesize, target_for
from rolecraft.synth.experience import is_historical, parse_dialogue, to_messages, trim_cut_sentence
from rolecraft.synth.parse import ParseError
from rolecraft.train.discriminators import read_examples

ALL = ["statements", "queries", "relevance", "nli", "scenes", "experiences", "protective", "sft"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The whole chain once, with the scripted teacher behind a real server."""
    target = make_target(tmp_path_factory.mktemp("chain"))
    with running_server(create_app({"scripted": ScriptedLLM()})) as url:
        http = OpenAICompatLLM("scripted", base_url=url, concurrency=3)
        summaries = synthesize(target, ALL, teacher(http, concurrency=3), progress=False)
    return target, {s.step: s for s in summaries}


def test_relevance_and_nli_rows_are_read_by_the_discriminator_trainer(chain):
    target, _ = chain
    folder = target.folder / "datasets"
    relevance = read_examples(folder / "relevance.jsonl", "relevance")
    assert len(relevance) == len(rows(target, "relevance")) > 0
    assert {e.label for e in relevance} == {"relevant", "irrelevant"}
    assert all(e.character == "Eve" and e.statement and e.query for e in relevance)
    nli = read_examples(folder / "nli.jsonl", "nli")
    assert len(nli) == len(rows(target, "nli")) > 0
    assert Counter(e.label for e in nli) == Counter({"entailed": len(nli) // 3, "neutral": len(nli) // 3,
                                                     "contradicted": len(nli) // 3})
    # rows where the second pass disagreed keep both labels; the trainer takes `label` (the intent)
    disagreed = [r for r in rows(target, "nli") if "labels" in r]
    assert disagreed and all(r["labels"][0] == r["label"] != r["labels"][1] for r in disagreed)
    for row in rows(target, "relevance"):
        assert {"id", "character", "statement", "query", "label"} <= row.keys()
    for row in rows(target, "nli"):
        assert {"id", "character", "statement", "query", "response", "label"} <= row.keys()


def test_experiences_keep_the_characters_thoughts_and_sft_rows_are_chat(chain):
    target, summaries = chain
    experiences, protective = rows(target, "experiences"), rows(target, "protective")
    assert experiences and protective
    for row in experiences + protective:
        assert {t["action"] for t in row["turns"]} <= {"thinking", "speaking"}
        assert all(t["speaker"] == "Eve" for t in row["turns"] if t["action"] == "thinking")
        assert any(t["speaker"] == "Eve" and t["action"] == "thinking" for t in row["turns"])
    assert summaries["experiences"].rejected["turn: others' thoughts"] >= 1
    assert all(row["bait"]["kind"] in ("invented", "relation") for row in protective)  # Eve is modern
    sft = rows(target, "sft")
    assert len(sft) == len(experiences) + len(protective)
    for row in sft:
        roles = [m["role"] for m in row["messages"]]
        assert roles[0] == "system" and roles[1] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles[1:], roles[2:], strict=False))  # user/assistant alternate
        system = row["messages"][0]["content"]
        assert "Location: " in system and "Status: " in system and "Eve" in system
        assert any(m["content"].startswith("(thinking)") for m in row["messages"] if m["role"] == "assistant")


def test_turn_by_turn_dialogues_with_a_local_batched_teacher(tmp_path):
    target = make_target(tmp_path)
    synthesize(target, ["scenes"], teacher(), progress=False)
    llm = ScriptedLLM()
    summaries = synthesize(target, ["experiences", "protective", "sft"], teacher(llm, concurrency=4),
                           dialogue="auto", progress=False)  # auto: a local (non-HTTP) teacher -> turns
    experiences, protective = rows(target, "experiences"), rows(target, "protective")
    assert experiences and protective and len(rows(target, "sft")) == len(experiences) + len(protective)
    for row in experiences + protective:
        plan = [("Eve" if t["speaker"] == "Eve" else "other", t["action"]) for t in row["turns"]]
        assert plan == [("other", "speaking"), ("Eve", "thinking"), ("Eve", "speaking"), ("other", "speaking"),
                        ("Eve", "thinking"), ("Eve", "speaking")]
        assert row["turns"][0]["speaker"] == "Sam"
    assert all(row["bait"]["topic"] in row["turns"][0]["content"] for row in protective)
    assert llm.calls == 7 * (len(experiences) + len(protective))  # a name, then six turns
    assert summaries[0].dropped == Counter()


def test_dialogue_rules():
    ok = json.dumps([{"speaker": "Sam", "action": "speaking", "content": "Hi Eve."},
                     {"speaker": "Eve", "action": "thinking", "content": "Sam again."},
                     {"speaker": "eve", "action": "speaking", "content": "Hello, Sam."},
                     {"speaker": "Sam", "action": "shouting", "content": "Bye!"},
                     {"speaker": "Sam", "action": "speaking", "content": "I'm sorry, " * 20},
                     {"speaker": "Sam", "action": "speaking", "content": "Hi Eve."}])
    turns, dropped = parse_dialogue(ok, "Eve")
    assert [t["speaker"] for t in turns] == ["Sam", "Eve", "Eve"]
    assert dropped == ["wrong action", "repetitive", "duplicate"]
    with pytest.raises(ParseError, match="character silent"):
        parse_dialogue('[{"speaker": "Sam", "action": "speaking", "content": "Hi."}]', "Eve")
    with pytest.raises(ParseError, match="no other speaker"):
        parse_dialogue('[{"speaker": "Eve", "action": "speaking", "content": "Alone."}]', "Eve")
    row = {"location": "Paris", "background": "Eve waits.", "turns": turns[1:]}
    messages = to_messages(row, "Eve")
    assert messages is not None and messages[1] == {"role": "user", "content": "(Eve waits.)"}
    assert is_historical(["Born in 1770 in Bonn.", "He died in 1827."]) and not is_historical(["In 2020 she"])
    long_cut = "I know the guild well and I have known it for many years now. " * 2 + "But the darkness in the Lumin"
    assert trim_cut_sentence(long_cut).endswith("years now.")
    assert trim_cut_sentence("Hello there") == "Hello there"


def zh_reply(messages):
    """The scripted teacher's answer to the Chinese statements prompt."""
    user = [m for m in messages if m["role"] == "user"][-1]["content"]
    text = user.split("资料：\n", 1)[1].split("\n\n", 1)[0]
    return json.dumps([s + "。" for s in re.split("[。！？]", text) if s.strip()] + ["她很聪明。"],
                      ensure_ascii=False)


def test_a_chinese_character_gets_chinese_statements(tmp_path, shared_data):
    target, _ = target_for(shared_data / "characters" / "apc" / "wiki_爱丽丝.txt", tmp_path)
    name = target.character().name
    with running_server(create_app({"scripted": ScriptedLLM(script=zh_reply)})) as url:
        http = OpenAICompatLLM("scripted", base_url=url)
        [summary] = synthesize(target, ["statements"], teacher(http), progress=False)
    kept = [r["statement"] for r in rows(target, "statements")]
    assert kept and all(name in s or any(p in s for p in name.split()) for s in kept)
    assert all(re.search(r"[\u4e00-\u9fff]", s) for s in kept)
    assert summary.rejected["pronoun"] >= 1 and not any(s.startswith("她") for s in kept)
    assert [s.text for s in target.character().statements] == kept


# ---------------------------------------------------------------------------------------------
# the embedded model as the teacher (slow: marked `model`)


@pytest.mark.model
def test_embedded_model_extracts_statements_through_the_server(tmp_path, local_llm):
    target = make_target(tmp_path, ["Eve studied psychology at university and now works for a spy agency."])
    with running_server(create_app({"smollm2": local_llm})) as url:
        http = OpenAICompatLLM("smollm2", base_url=url, concurrency=2)
        [summary] = synthesize(target, ["statements"], teacher(http, concurrency=2, tries=2), progress=False)
    assert summary.ran == 1 and summary.calls >= 1 and summary.completion_tokens > 0
    for row in rows(target, "statements"):  # whatever the small model wrote, only rule-abiding lines are kept
        assert "Eve" in row["statement"] and not row["statement"].startswith(("She", "He"))


@pytest.mark.model
def test_embedded_model_batches_label_calls_locally(tmp_path, local_llm):
    target = make_target(tmp_path)
    synthesize(target, ["statements", "queries"], teacher(ScriptedLLM()), progress=False)
    [summary] = synthesize(target, ["relevance"], teacher(local_llm, concurrency=4, tries=1), max_pairs=4,
                           progress=False)
    labelled = [r for r in rows(target, "relevance") if r["origin"] == "teacher"]
    assert len(labelled) + sum(summary.dropped.values()) == 4
    assert all(r["label"] in ("relevant", "irrelevant") for r in labelled)


@pytest.mark.model
@pytest.mark.parametrize("task", ["relevance", "nli"])
def test_the_rows_train_a_discriminator_without_conversion(chain, tmp_path, task):
    from rolecraft.train.discriminators import TrainConfig, train

    target, _ = chain
    config = TrainConfig(task=task, train_files=[target.folder / "datasets" / f"{task}.jsonl"],
                         output_dir=tmp_path / task, max_steps=2, batch_size=8, eval_every=1000, device="cpu",
                         num_threads=1)
    metrics = train(config)
    assert metrics["steps"] == 2 and metrics["train_rows"] > 0
