"""`eval apc`: resuming an interrupted run (scripted LLM, control flow only), the ΔAPC arithmetic, and the real
command end to end with the embedded model and the shipped APC scorer on a tiny run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rolecraft.apc import APCReport
from rolecraft.character import Character, Statement
from rolecraft.cli import app
from rolecraft.evaluate.apc_table import ApcEvalConfig, ApcRun, build_report, cells, run_apc, run_drift
from rolecraft.evaluate.common import Target
from rolecraft.evaluate.store import ResultLog
from rolecraft.llm.base import BaseLLM, Message, Sampling

ALICE = "../shared/data/characters/apc/wiki_Alice.txt"


class Interrupted(RuntimeError):
    pass


class CountingLLM(BaseLLM):
    """Says the same line each call; raises after `fail_after` calls (a simulated kill). Control flow only."""

    def __init__(self, fail_after: int | None = None):
        super().__init__(Sampling())
        self.fail_after, self.calls = fail_after, 0

    def chat(self, messages: list[Message], sampling: Sampling | None = None, **overrides: Any) -> str:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise Interrupted("killed")
        return f"I play guitar by the sea. ({self.calls})"


class LengthScorer:
    """Scores a reply by its length: enough to check which candidate best-of-n keeps."""

    def report(self, statements: list[str], query: str, responses: list[str], character: str | None = None):
        return [APCReport(r, float(len(r)), float(len(r)) / len(statements), []) for r in responses]

    def score(self, statements: list[str], query: str, responses: list[str], character: str | None = None):
        return [float(len(r)) for r in responses]


class FixedRetriever:
    def select(self, texts: list[str], query: str, k: int) -> list[int]:
        return list(range(min(k, len(texts))))


def _run(tmp_path: Path) -> tuple[ApcRun, ApcEvalConfig]:
    c = Character("Alice", [Statement(f"Alice fact {i}.") for i in range(8)])
    run = ApcRun([Target(c, None)], {c.slug: ["Who are you?", "Where do you live?", "What do you play?"]},
                 {c.slug: "test"})
    return run, ApcEvalConfig(methods=("none", "rag", "rag+best"), best_of=3, batch_size=3, drift_turns=0, top_k=2)


def test_interrupted_run_resumes_without_redoing_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rolecraft.agent.RolePlayAgent.retriever", property(lambda self: FixedRetriever()))
    run, cfg = _run(tmp_path)
    log = ResultLog(tmp_path, cfg.settings())
    with pytest.raises(Interrupted):
        run_apc(run, CountingLLM(fail_after=4), LengthScorer(), cfg, log, progress=False)
    first = {r["id"] for r in ResultLog(tmp_path, cfg.settings()).rows()}
    assert len(first) == 3  # the 'none' batch was on disk; the 'rag' batch died with its 2nd reply
    llm = CountingLLM()
    log = ResultLog(tmp_path, cfg.settings())
    run_apc(run, llm, LengthScorer(), cfg, log, progress=False)
    rows = log.rows()
    assert len(rows) == 9 and first <= {r["id"] for r in rows}
    assert llm.calls == 3 + 3 * 3  # only the missing rows: 3 rag replies, 3 queries x 3 candidates
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len({json.loads(x)["id"] for x in lines}) == 9  # nothing duplicated
    best = [r for r in rows if r["method"] == "rag+best"]
    assert all(r["reply"] == max((c["reply"] for c in r["candidates"]), key=len) for r in best)
    run_apc(run, llm, LengthScorer(), cfg, log, progress=False)
    assert llm.calls == 12  # a complete run does nothing


def test_delta_is_paired_per_query_and_report_renders(tmp_path: Path) -> None:
    rows = [{"kind": "reply", "character": "A", "method": m, "qid": q, "apc": base + (2.0 if m == "rag" else 0.0),
             "reply": "x", "ooc": [], "query": q, "id": f"{m}{q}"}
            for q, base in (("q1", 1.0), ("q2", 5.0)) for m in ("none", "rag")]
    delta = cells(rows, ["A"], ["rag"], delta=True)["rag"][0]
    assert (delta.mean, delta.low, delta.high) == (2.0, 2.0, 2.0)  # the query spread cancels in the pairing
    absolute = cells(rows, ["A"], ["rag"])["rag"][0]
    assert absolute.mean == 5.0 and absolute.high > absolute.low


def test_drift_runs_one_chat_per_character(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rolecraft.agent.RolePlayAgent.retriever", property(lambda self: FixedRetriever()))
    run, cfg = _run(tmp_path)
    cfg.drift_turns = 4
    log = ResultLog(tmp_path, cfg.settings())
    run_drift(run, CountingLLM(), LengthScorer(), cfg, log, progress=False)
    (row,) = log.rows("drift")
    assert [t["turn"] for t in row["turns"]] == [1, 2, 3, 4]
    assert row["turns"][3]["query"] == "Who are you?"  # the queries repeat in order
    rep = build_report(log, run, cfg)
    assert any(s.title.startswith("Character drift") for s in rep.sections)


@pytest.mark.model
def test_eval_apc_command_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    alice = shared_data / "characters" / "apc" / "wiki_Alice.txt"
    args = ["eval", "apc", str(alice), "--methods", "none,rag+best", "--best-of", "2", "--limit", "2",
            "--max-new-tokens", "8", "--drift-turns", "2", "--out", str(tmp_path), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    replies = [r for r in rows if r["kind"] == "reply"]
    assert len(replies) == 4 and {r["method"] for r in replies} == {"none", "rag+best"}
    assert all(r["statements"] == 17 and 0 <= r["apc"] <= 17 and r["reply"].strip() for r in replies)
    best = [r for r in replies if r["method"] == "rag+best"]
    assert all(r["apc"] == max(c["apc"] for c in r["candidates"]) for r in best)
    assert len([r for r in rows if r["kind"] == "drift"][0]["turns"]) == 2
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "ΔAPC" in html
    assert (tmp_path / "report.md").is_file() and (tmp_path / "figures" / "delta-apc.png").is_file()
    again = CliRunner().invoke(app, args)  # everything is done: it only rewrites the report
    assert again.exit_code == 0, again.output
    assert len((tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()) == len(rows)


def test_eval_apc_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "apc", "mira", "--methods", "rag,bogus", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Unknown method(s) bogus" in result.output
    result = CliRunner().invoke(app, ["eval", "interview", "mira", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--questions" in result.output


@pytest.mark.model
def test_rag_dpo_method_uses_a_lora_adapter(tmp_path: Path, shared_data: Path) -> None:
    """A (random, untrained) LoRA adapter stands in for the training issue's DPO adapter: the method must load it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rolecraft.llm.local import hf_folder, resolve_model_path

    base = AutoModelForCausalLM.from_pretrained(hf_folder(resolve_model_path(None)))
    net = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    net.save_pretrained(tmp_path / "dpo")
    alice = shared_data / "characters" / "apc" / "wiki_Alice.txt"
    result = CliRunner().invoke(app, ["eval", "apc", str(alice), "--methods", "none,rag+dpo", "--limit", "1",
                                      "--max-new-tokens", "6", "--drift-turns", "0", "--adapter",
                                      str(tmp_path / "dpo"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    dpo = [r for r in rows if r["method"] == "rag+dpo"]
    assert len(dpo) == 1 and dpo[0]["adapter"] == str(tmp_path / "dpo") and dpo[0]["reply"].strip()
    assert "RAG + DPO adapter" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
