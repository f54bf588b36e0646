"""`rolecraft serve`: the character server, its web page and sessions, from the command line.

Only typer and the standard library are imported at module level, so the CLI starts fast; the model
and FastAPI load when the command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..errors import RolecraftError


def _keys(given: list[str] | None) -> tuple[str, ...]:
    keys = list(given or [])
    keys += [k.strip() for k in os.environ.get("ROLECRAFT_API_KEY", "").split(",")]
    return tuple(dict.fromkeys(k for k in keys if k))


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback exposes the server")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    backend: Annotated[str, typer.Option("--backend", "-b", help="local | llamacpp | openai")] = "local",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="'smollm2' (embedded), a model folder, a .gguf file, or a served model id"),
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter: a folder, 'character/name', or a name "
                                                "unique in the workspace (local backend)")] = None,
    home: Annotated[Path | None, typer.Option("--home", help="Workspace folder (default: $ROLECRAFT_HOME)")] = None,
    db: Annotated[Path | None, typer.Option(help="Session database (default: <workspace>/sessions.sqlite3)")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Require this key (repeatable; also $ROLECRAFT_API_KEY, comma-separated)"),
    ] = None,
    mode: Annotated[str, typer.Option(help="rag: top-k statements; all: every statement; none: name only")] = "rag",
    top_k: Annotated[int, typer.Option("--top-k", help="Statements retrieved per message in rag mode")] = 5,
    style: Annotated[str, typer.Option(help="chat: chat messages; quote: EGOS quoted speech")] = "chat",
    max_tokens: Annotated[int, typer.Option(help="Cap on a reply's tokens (larger requests are clamped)")] = 512,
    repetition_penalty: Annotated[
        float, typer.Option(help="Default for requests that send none (>1 keeps small models from looping)")
    ] = 1.15,
    max_pending: Annotated[int, typer.Option(help="Requests admitted at once; more get 429 + Retry-After")] = 32,
    max_batch: Annotated[int, typer.Option(help="Rows generated together on the local backend")] = 16,
    max_body: Annotated[int, typer.Option(help="Largest request body, in bytes")] = 1_000_000,
    max_messages: Annotated[int, typer.Option(help="Most messages in one request")] = 512,
) -> None:
    """Serve the workspace's characters over an OpenAI-compatible API, with a chat page at /."""
    from ..agent import AgentConfig
    from ..llm import Sampling, load_llm
    from ..workspace import Workspace
    from .characters import ServerConfig, create_character_app
    from .openai_api import Limits
    from .openai_api import serve as run

    if mode not in ("rag", "all", "none"):
        raise RolecraftError(f"--mode must be 'rag', 'all' or 'none', not {mode!r}")
    if not 0 < repetition_penalty <= 2:
        raise RolecraftError("--repetition-penalty must be in (0, 2]")
    if style not in ("chat", "quote"):
        raise RolecraftError(f"--style must be 'chat' or 'quote', not {style!r}")
    for name, value in (("max-tokens", max_tokens), ("max-pending", max_pending), ("max-batch", max_batch),
                        ("max-body", max_body), ("max-messages", max_messages), ("top-k", top_k)):
        if value < 1:
            raise RolecraftError(f"--{name} must be at least 1")
    workspace = Workspace(home)
    limits = Limits(max_body, max_messages, max_tokens, max_pending, max_batch)
    keys = _keys(api_key)
    agent = AgentConfig(mode=mode, top_k=top_k, style=style, repetition_penalty=repetition_penalty)  # type: ignore[arg-type]
    config = ServerConfig(limits, keys, agent)
    # The base model's own route starts from the same default; OpenAI's API has no such field to send on.
    kwargs = {} if backend == "openai" else {"sampling": Sampling(repetition_penalty=repetition_penalty)}
    if adapter:  # a bare name must be unique among the workspace's characters ('slug/name' picks one)
        from ..train.common import resolve_adapter

        adapter = str(resolve_adapter(adapter, workspace))
    llm = load_llm(backend, model, adapter=adapter, **kwargs)
    app = create_character_app(llm, db or workspace.root / "sessions.sqlite3", workspace, config)
    typer.echo(f"rolecraft: serving {', '.join(app.state.server.catalog.ids()) or 'no characters'} "
               f"on {backend}:{llm.name} at http://{host}:{port}/ (API key {'required' if keys else 'off'})")
    run(app, host, port)
