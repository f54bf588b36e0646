"""The `rolecraft extract` / `rolecraft synth ...` commands, registered the way the main CLI does, run with
Typer's CliRunner against a scripted teacher behind a real loopback server."""

from __future__ import annotations

import json

import pytest
import typer
from test_synth_jobs import PASSAGES
from test_synth_teacher import ScriptedLLM
from typer.testing import CliRunner

from rolecraft.character import Character
from rolecraft.server.openai_api import create_app, running_server
from rolecraft.synth.commands import extract, synth_app
from rolecraft.workspace import Workspace

app = typer.Typer()
app.command("extract")(extract)
app.add_typer(synth_app, name="synth")
runner = CliRunner()


@pytest.fixture(scope="module")
def url():
    with running_server(create_app({"scripted": ScriptedLLM()})) as base_url:
        yield base_url


def teacher_args(url: str) -> list[str]:
    return ["--backend", "openai", "--model", "scripted", "--base-url", url, "--no-progress"]


def test_extract_then_the_chain_then_status(tmp_path, url):
    Workspace(tmp_path).add(Character("Eve", passages=list(PASSAGES)))
    home = ["--home", str(tmp_path)]
    result = runner.invoke(app, ["extract", "eve", *teacher_args(url), *home])
    assert result.exit_code == 0, result.output
    assert "statements: 3 items run" in result.output and "lines rejected: pronoun" in result.output
    result = runner.invoke(app, ["synth", "all", "eve", "--steps", "queries,relevance", "--limit", "2", "--json",
                                 *teacher_args(url), *home])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert [s["step"] for s in summaries] == ["queries", "relevance"] and summaries[0]["ran"] == 2
    result = runner.invoke(app, ["synth", "status", "eve", "--json", *home])
    status = {s["step"]: s for s in json.loads(result.stdout)}
    assert status["statements"]["done"] == status["statements"]["items"] == 3
    assert status["queries"]["done"] == 2 and status["queries"]["items"] > 2


def test_a_profile_file_is_imported_first(tmp_path, url):
    profile = tmp_path / "wiki_Eve.txt"
    profile.write_text("\n\n".join(PASSAGES))
    result = runner.invoke(app, ["extract", str(profile), "--limit", "1", *teacher_args(url),
                                 "--home", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert Workspace(tmp_path / "ws").list() == ["eve"]


@pytest.mark.parametrize(("args", "message"), [
    (["synth", "all", "eve", "--steps", "queries,bogus"], "Unknown step(s) bogus"),
    (["extract", "nobody"], "neither a file"),
    (["extract", "eve", "--backend", "openai", "--model", "x", "--base-url", "http://127.0.0.1:9/v1",
      "--tries", "1"], "Cannot reach the server"),
])
def test_errors_are_one_readable_line(tmp_path, args, message):
    Workspace(tmp_path).add(Character("Eve", passages=list(PASSAGES)))
    result = runner.invoke(app, [*args, "--home", str(tmp_path)])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
