"""The synthesis job runner: resuming, repairing, invalidating, counting — and malformed teacher output
fed through a real OpenAI-compatible server on loopback (rolecraft's `create_app` + `running_server`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from test_synth_teacher import ScriptedLLM

from rolecraft.character import Character, Statement
from rolecraft.errors import RolecraftError
from rolecraft.llm.openai_compat import OpenAICompatLLM
from rolecraft.server.openai_api import create_app, running_server
from rolecraft.synth import Teacher, make_step, run_step, step_status, synthesize
from rolecraft.synth.common import Target
from rolecraft.synth.jobs import _step_lock, read_jsonl
from rolecraft.workspace import Workspace

PASSAGES = [
    "Eve studied psychology at university. She reads people easily.",
    "Eve works as a senior information gatherer at a spy agency. Eve paints in secret.",
    "Eve was betrayed by a partner once. Eve now prefers to work alone.",
]


def make_target(root: Path, passages: list[str] = PASSAGES, name: str = "Eve") -> Target:
    ws = Workspace(root)
    character = Character(name=name, passages=list(passages),
                          statements=[Statement("Lore entry about the agency.", ["agency"], "lorebook")])
    return Target(ws, ws.add(character))


def rows(target: Target, step: str) -> list[dict]:
    return read_jsonl(target.folder / "datasets" / f"{step}.jsonl")[0]


def teacher(llm=None, **kw) -> Teacher:
    return Teacher(llm or ScriptedLLM(), backoff=0, **kw)


def test_statements_are_extracted_checked_and_written_to_the_character(tmp_path):
    target = make_target(tmp_path)
    [summary] = synthesize(target, ["statements"], teacher(), progress=False)
    texts = [r["statement"] for r in rows(target, "statements")]
    assert "Eve studied psychology at university." in texts
    assert not any(t.startswith("She") for t in texts)
    assert summary.rejected["pronoun"] >= 3  # the scripted teacher adds "She also likes tea." to each reply
    character = target.character()
    assert [s.text for s in character.statements if s.source == "extracted"] == texts
    assert [s.text for s in character.lorebook] == ["Lore entry about the agency."]  # kept
    assert len({r["id"] for r in rows(target, "statements")}) == len(texts)


def test_a_rerun_skips_done_items_and_limit_runs_a_few(tmp_path):
    target = make_target(tmp_path)
    llm = ScriptedLLM()
    [first] = synthesize(target, ["statements"], teacher(llm), limit=2, progress=False)
    assert (first.ran, first.left, llm.calls) == (2, 1, 2)
    [second] = synthesize(target, ["statements"], teacher(llm), progress=False)
    assert (second.done_before, second.ran, second.left, llm.calls) == (2, 1, 0, 3)
    [third] = synthesize(target, ["statements"], teacher(llm), progress=False)
    assert (third.ran, third.rows, llm.calls) == (0, 0, 3)
    manifest = json.loads((target.folder / "datasets" / "manifest.json").read_text())
    assert manifest["steps"]["statements"]["complete"] is True


def test_a_torn_last_line_and_unclaimed_rows_are_repaired(tmp_path):
    target = make_target(tmp_path)
    synthesize(target, ["statements"], teacher(), limit=2, progress=False)
    data = target.folder / "datasets" / "statements.jsonl"
    journal = target.folder / "datasets" / "journal" / "statements.jsonl"
    good = {r["id"] for r in rows(target, "statements")}
    # a kill between writing rows and journalling them, then a kill in the middle of a line
    with open(data, "a") as fh:
        fh.write(json.dumps({"id": "orphan", "character": "Eve", "statement": "Eve orphan row."}) + "\n")
        fh.write('{"id": "torn", "charac')
    with open(journal, "a") as fh:
        fh.write('{"item": "tor')
    [summary] = synthesize(target, ["statements"], teacher(), progress=False)
    assert summary.stale == 1 and summary.ran == 1
    ids = [r["id"] for r in rows(target, "statements")]
    assert len(ids) == len(set(ids)) and good <= set(ids) and "orphan" not in ids
    assert data.read_bytes().endswith(b"\n") and journal.read_bytes().endswith(b"\n")
    assert len(read_jsonl(journal)[0]) == 3


def test_changed_profile_invalidates_only_the_stale_items(tmp_path):
    target = make_target(tmp_path)
    synthesize(target, ["statements", "queries"], teacher(), progress=False)
    before = {r["statement"] for r in rows(target, "statements")}
    assert any("paints" in s for s in before)
    # the profile changes: the second passage is rewritten
    character = target.character()
    character.passages[1] = "Eve works as a senior information gatherer at a spy agency. Eve sings opera."
    target.workspace.add(character, overwrite=True)
    status = {s["step"]: s for s in step_status(target)}
    assert status["statements"]["stale_items"] == 1 and status["statements"]["done"] == 2
    llm = ScriptedLLM()
    [summary] = synthesize(target, ["statements"], teacher(llm), progress=False)
    assert summary.ran == 1 and llm.calls == 1 and summary.stale >= 1
    after = {r["statement"] for r in rows(target, "statements")}
    assert not any("paints" in s for s in after) and any("opera" in s for s in after)
    # downstream: queries of the removed statement are stale now, and go on the next queries run
    status = {s["step"]: s for s in step_status(target)}
    assert status["queries"]["stale_items"] >= 1
    synthesize(target, ["queries"], teacher(), progress=False)
    assert {r["statement"] for r in rows(target, "queries")} == after | {"Lore entry about the agency."}


def test_fresh_starts_over(tmp_path):
    target = make_target(tmp_path)
    synthesize(target, ["statements"], teacher(), progress=False)
    llm = ScriptedLLM()
    [summary] = synthesize(target, ["statements"], teacher(llm), fresh=True, progress=False)
    assert summary.done_before == 0 and llm.calls == 3


def test_one_run_per_step_at_a_time(tmp_path):
    target = make_target(tmp_path)
    lock = target.folder / "datasets" / "journal" / ".statements.lock"
    with _step_lock(lock, "step 'statements' of eve"), pytest.raises(RolecraftError, match="already working"):
        synthesize(target, ["statements"], teacher(), progress=False)


def test_concurrent_items_are_all_written_once(tmp_path):
    target = make_target(tmp_path, [f"Eve keeps notebook k{i}x{i * 7} in a drawer." for i in range(30)])
    [summary] = synthesize(target, ["statements"], teacher(ScriptedLLM(delay=0.01), concurrency=8),
                           progress=False)
    assert summary.ran == 30
    journal = read_jsonl(target.folder / "datasets" / "journal" / "statements.jsonl")[0]
    assert len({e["item"] for e in journal}) == 30
    ids = [r["id"] for r in rows(target, "statements")]
    assert len(ids) == len(set(ids)) == 30


# ---------------------------------------------------------------------------------------------
# malformed output through a real server


def test_malformed_teacher_output_is_retried_dropped_and_counted_over_http(tmp_path):
    target = make_target(tmp_path)
    malformed = [
        "Sure! Here are the facts you asked for.",  # item 1, try 1: no list
        "['Eve studied psychology.']",  # item 1, try 2: single quotes -> bad json -> dropped
        "[]",  # item 2, try 1: empty
        '{"facts": ["Eve works at a spy agency."]}',  # item 2, try 2: an object, no list -> dropped
        '["She hides things.", "Eve was betrayed by a partner once."]',  # item 3: one line rejected
    ]
    with running_server(create_app({"scripted": ScriptedLLM(queue=malformed)})) as url:
        http = OpenAICompatLLM("scripted", base_url=url, concurrency=1)
        [summary] = synthesize(target, ["statements"], teacher(http, concurrency=1, tries=2), progress=False)
        assert summary.retries == Counter({"no list": 1, "empty": 1})
        assert summary.dropped == Counter({"bad json": 1, "no list": 1})
        assert summary.rejected == Counter({"pronoun": 1})
        assert [r["statement"] for r in rows(target, "statements")] == ["Eve was betrayed by a partner once."]
        assert summary.calls == 5 and not summary.tokens_exact and summary.prompt_tokens > 0
        # dropped items count as done; --retry-dropped runs them again
        [again] = synthesize(target, ["statements"], teacher(http, concurrency=1), progress=False)
        assert again.ran == 0
        [retried] = synthesize(target, ["statements"], teacher(http, concurrency=1), retry_dropped=True,
                               progress=False)
        assert retried.ran == 2 and not retried.dropped


def test_wrong_labels_and_broken_replies_over_http(tmp_path):
    target = make_target(tmp_path)
    synthesize(target, ["statements", "queries"], teacher(), progress=False)
    n_statements = len(target.character().statements)  # the lorebook entry gets queries too
    wrong = ['{"label": "maybe"}'] * 50  # every relevance call gets a label outside the two
    with running_server(create_app({"scripted": ScriptedLLM(queue=wrong)})) as url:
        http = OpenAICompatLLM("scripted", base_url=url, concurrency=2)
        [rel] = synthesize(target, ["relevance"], teacher(http, concurrency=2, tries=2),
                           pairs_per_statement=1, progress=False)
    assert rel.dropped == Counter({"wrong label": n_statements})
    assert rel.retries == Counter({"wrong label": n_statements})
    assert {r["origin"] for r in rows(target, "relevance")} == {"own"}  # own queries need no teacher
    broken = ['{"entailed": "Yes, I did."}',
              '{"entailed": "Yes, I do.", "neutral": "yes, I do", "contradicted": "Yes I do!"}']
    with running_server(create_app({"scripted": ScriptedLLM(queue=broken)})) as url:
        http = OpenAICompatLLM("scripted", base_url=url, concurrency=1)
        [nli] = synthesize(target, ["nli"], teacher(http, concurrency=1, tries=2), limit=1, progress=False)
    assert nli.retries == Counter({"missing reply": 1}) and nli.dropped == Counter({"same replies": 1})


def test_steps_that_need_a_teacher_say_so(tmp_path):
    target = make_target(tmp_path)
    with pytest.raises(RolecraftError, match="needs a teacher"):
        synthesize(target, ["statements"], None, progress=False)
    with pytest.raises(RolecraftError, match="Unknown synthesis step"):
        make_step("nope", target)
    empty = Target(target.workspace, target.workspace.add(Character("Bob", [Statement("Bob is tall.")])))
    with pytest.raises(RolecraftError, match="no profile passages"):
        run_step(make_step("statements", empty), empty.folder, teacher())
