"""`rolecraft serve` as a command: options, API keys from the environment, errors as one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from test_server_support import ScriptedLLM, workspace
from typer.testing import CliRunner

import rolecraft.llm as llm_module
import rolecraft.server.openai_api as openai_api
from rolecraft.errors import RolecraftError
from rolecraft.server.command import serve


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(serve)
    app.command("noop", hidden=True)(lambda: None)  # two commands: `serve` stays a subcommand
    return app


def test_serve_builds_the_character_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    loaded: dict[str, Any] = {}

    def load(backend: str, model: str | None, adapter: str | None = None, **kwargs: Any) -> ScriptedLLM:
        loaded.update(kwargs)
        return ScriptedLLM()

    monkeypatch.setattr(llm_module, "load_llm", load)
    monkeypatch.setattr(openai_api, "serve", lambda app, host, port: served.update(app=app, host=host, port=port))
    monkeypatch.setenv("ROLECRAFT_API_KEY", "sk-env1, sk-env2")
    ws = workspace(tmp_path)
    result = CliRunner().invoke(
        cli(), ["serve", "--home", str(ws.root), "--port", "9123", "--api-key", "sk-cli", "--max-tokens", "64"]
    )
    assert result.exit_code == 0, result.output
    assert "ada-vell" in result.output and "API key required" in result.output
    server = served["app"].state.server
    assert (served["host"], served["port"]) == ("127.0.0.1", 9123)  # loopback unless told otherwise
    assert server.config.api_keys == ("sk-cli", "sk-env1", "sk-env2")
    assert server.limits.max_tokens == 64
    assert server.store.path == ws.root / "sessions.sqlite3"
    # the small-model repetition penalty is the default for characters and for the base model's route
    assert server.config.agent.repetition_penalty == loaded["sampling"].repetition_penalty == 1.15


@pytest.mark.parametrize(("options", "message"), [
    ({"mode": "everything"}, "--mode must be"),
    ({"style": "poem"}, "--style must be"),
    ({"max_tokens": 0}, "--max-tokens must be at least 1"),
    ({"max_pending": 0}, "--max-pending must be at least 1"),
])  # fmt: skip
def test_serve_rejects_bad_options(options: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_module, "load_llm", lambda *a, **k: pytest.fail("no model is loaded for bad options"))
    with pytest.raises(RolecraftError, match=message):
        serve(**options)
