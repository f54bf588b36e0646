"""Kill a synthesis run part-way with SIGKILL (a real process kill), rerun it, and check that nothing
is lost or duplicated. The teacher is a deterministic scripted model behind rolecraft's real
OpenAI-compatible server on loopback; the run is the `synth queries` command in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_synth_teacher import ScriptedLLM

from rolecraft.llm.openai_compat import OpenAICompatLLM
from rolecraft.server.openai_api import create_app, running_server
from rolecraft.synth import Teacher, synthesize, target_for
from rolecraft.synth.jobs import read_jsonl

EVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "characters" / "apc" / "wiki_Eve.txt"
SOURCE = EVE if EVE.is_file() else "mira"  # the bundled example stands in where the shared data is absent

CHILD = """
import sys
from rolecraft.synth.commands import synth_app
home, url = sys.argv[1], sys.argv[2]
synth_app(["queries", sys.argv[3], "--backend", "openai", "--model", "scripted",
           "--base-url", url, "--concurrency", "3", "--home", home, "--no-progress"])
"""


def _child(home: Path, url: str, slug: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(home), url, slug], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _journal(home: Path, slug: str) -> list[dict]:
    return read_jsonl(home / slug / "datasets" / "journal" / "queries.jsonl")[0]


def test_a_killed_run_resumes_with_no_duplicate_or_missing_ids(tmp_path):
    killed_home, clean_home = tmp_path / "killed", tmp_path / "clean"
    slugs = set()
    for home in (killed_home, clean_home):
        target, _ = target_for(SOURCE, home)
        slugs.add(target.slug)
    [slug] = slugs
    with running_server(create_app({"scripted": ScriptedLLM(delay=0.03)})) as url:
        # the reference: one uninterrupted run
        reference, _ = target_for(slug, clean_home)
        teacher = Teacher(OpenAICompatLLM("scripted", base_url=url, concurrency=3), concurrency=3, backoff=0)
        [ref] = synthesize(reference, ["queries"], teacher, progress=False)
        assert ref.left == 0 and ref.ran > 20
        expected = {r["id"] for r in read_jsonl(reference.folder / "datasets" / "queries.jsonl")[0]}

        # two kills at different points, then a run to the end
        kills = []
        for at in (4, ref.ran // 2):
            child = _child(killed_home, url, slug)
            deadline = time.monotonic() + 60
            while len(_journal(killed_home, slug)) < at and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            assert child.returncode == -signal.SIGKILL, child.stdout.read().decode()  # type: ignore[union-attr]
            kills.append(len(_journal(killed_home, slug)))
        assert kills[0] < kills[1] < ref.ran  # really stopped part-way, and the second run went on
        child = _child(killed_home, url, slug)
        output = child.communicate(timeout=120)[0].decode()
        assert child.returncode == 0, output
        assert f"{ref.ran - kills[1]} items run, {kills[1]} done before, 0 left" in output

    rows = read_jsonl(killed_home / slug / "datasets" / "queries.jsonl")[0]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert set(ids) == expected, "missing or extra rows"
    items = [e["item"] for e in _journal(killed_home, slug)]
    assert len(items) == len(set(items)) == ref.ran
