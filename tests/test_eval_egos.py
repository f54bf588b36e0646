"""EGOS memory (the real model, forced summarisation really folds the fact away), consistency and quality
(scripted models: order swapping and counting only), and the out-of-character rate over other evals' rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rolecraft.character import Character, Statement, load_character
from rolecraft.cli import app
from rolecraft.evaluate.common import Target
from rolecraft.evaluate.egos import judge_report, parse_system, real_lines, recalled, run_consistency, run_quality
from rolecraft.evaluate.judge import Judge
from rolecraft.evaluate.ooc_rate import ooc_report, replies_from_results, run_ooc
from rolecraft.evaluate.store import ResultLog
from rolecraft.examples import load_example
from rolecraft.llm.base import BaseLLM, Message, Sampling


class Always(BaseLLM):
    """Answers every call with the same text. Control flow only."""

    def __init__(self, text: str):
        super().__init__(Sampling())
        self.text, self.calls = text, 0

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        self.calls += 1
        return self.text


class FixedRetriever:
    def select(self, texts: list[str], query: str, k: int) -> list[int]:
        return list(range(min(k, len(texts))))


@pytest.fixture
def no_embeddings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rolecraft.agent.RolePlayAgent.retriever", property(lambda self: FixedRetriever()))


def test_helpers(shared_data: Path) -> None:
    assert recalled("Your sister? Ottilie, of course.", ("ottilie",))
    assert not recalled("Your sister is Emily.", ("ottilie",))
    assert parse_system("rag:quote") == ("rag", "quote") and parse_system("none") == ("none", "chat")
    with pytest.raises(Exception, match="mode"):
        parse_system("best:chat")
    mira = real_lines(load_example("mira"))
    assert mira and all("{{user}}" not in x for x in mira)
    ludwig = real_lines(load_character(shared_data / "characters" / "character_llm" / "wiki_Beethoven.txt"))
    assert any("seize Fate by the throat" in x for x in ludwig)


def test_consistency_counts_fooled_in_both_orders(tmp_path: Path, no_embeddings: None) -> None:
    target = Target(load_example("mira"), None)
    log = ResultLog(tmp_path, {})
    judge = Judge(Always("The first one.\nAnswer: A"), prime=False)
    run_consistency(target, Always("Aye, the lamp needs oil."), judge, log, limit=3, progress=False)
    rows = log.rows("consistency")
    assert len(rows) == 3
    # a judge that always says A is right when the real line is first and fooled when it is second
    assert [[j["fooled"] for j in r["judgements"]] for r in rows] == [[False, True]] * 3
    rep = judge_report(log, target, "always-A")
    assert ("fooled rate", "50%") in rep.summary


def test_quality_swaps_positions(tmp_path: Path, no_embeddings: None) -> None:
    target = Target(Character("Mira", [Statement("Mira keeps a lighthouse.")]), None)
    log = ResultLog(tmp_path, {})
    run_quality(target, Always("The lamp is lit."), Judge(Always("B is nicer.\nAnswer: B"), prime=False),
                ("rag", "none"), ["Hello?", "Is it stormy?"], log, progress=False)
    rows = log.rows("quality")
    assert [r["prefers"] for r in rows] == [["2", "1"]] * 2 and {r["winner"] for r in rows} == {"tie"}
    Judge.pick_better  # noqa: B018 - the API the command uses
    judge = Judge(Always("garbled"), prime=False)
    run_quality(target, Always("x"), judge, ("rag", "none"), ["Third?"], log, progress=False)
    assert log.rows("quality")[-1]["prefers"] == [None, None]  # parse failures stay failures


def test_ooc_rate_reads_other_evals(tmp_path: Path) -> None:
    src = tmp_path / "results.jsonl"
    rows = [{"id": "1", "kind": "reply", "character": "Alice", "method": "rag", "query": "Hi", "reply":
             "As an AI language model, I cannot play guitar."},
            {"id": "2", "kind": "single", "character": "Alice", "question": "Who?", "answer": "I'm Alice."},
            {"id": "3", "kind": "memory", "character": "Alice", "condition": "full",
             "turns": [{"user": "Hi", "reply": "Alice smiles and says hello."}, {"user": "Ok", "reply": "Sure."}]}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    items = replies_from_results([src])
    assert [i["source"] for i in items] == ["apc:rag", "interview:single", "memory:full", "memory:full"]
    log = ResultLog(tmp_path / "ooc", {})
    run_ooc(items, log)
    flagged = {r["reply"]: r["rules"] for r in log.rows("ooc")}
    assert flagged["As an AI language model, I cannot play guitar."] == ["assistant voice"]
    assert flagged["Alice smiles and says hello."] == ["third-person narration"] and flagged["I'm Alice."] == []
    assert ("out of character (rules)", "50%") in ooc_report(log).summary


@pytest.mark.model
def test_memory_command_forces_summarisation(tmp_path: Path, shared_data: Path) -> None:
    alice = shared_data / "characters" / "apc" / "wiki_Alice.txt"
    result = CliRunner().invoke(app, ["eval", "memory", str(alice), "--limit", "1", "--fillers", "1",
                                      "--max-new-tokens", "8", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = {r["condition"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert rows["full"]["summaries"] == 0 and rows["full"]["fact_verbatim_in_prompt"]
    assert rows["summarised"]["summaries"] >= 1 and not rows["summarised"]["fact_verbatim_in_prompt"]
    assert rows["summarised"]["summary"]  # the fact now lives only in the summary (if the model kept it)
    assert [t["user"] for t in rows["full"]["turns"]][0].startswith("By the way, my sister")
    assert "Recall rate" in (tmp_path / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("reply", [
    "I'm Bob. I'm a brilliant and resourceful AI assistant with a passion for helping people.",
    "I'm not just a creative AI, I've got a lot of amazing people in my life.",
    "I am a creative writing assistant dedicated to helping users craft engaging stories.",
    "I'm not just a machine designed to make decisions.",
    "I've been designed with empathy and curiosity.",
])
def test_ooc_rules_catch_what_the_evals_found(reply: str) -> None:
    from rolecraft.ooc import check

    assert check(reply, "Eve").reasons == ("assistant voice",)


@pytest.mark.parametrize("reply", [
    "I was trained by my father to fight.",
    "I'm a teaching assistant at the university.",
    "I'm not an AI, I'm a lighthouse keeper.",
    "The machine my uncle built still runs.",
])
def test_ooc_rules_stay_narrow(reply: str) -> None:
    from rolecraft.ooc import check

    assert check(reply, "Eve").reasons == ()
