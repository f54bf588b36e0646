"""What every `rolecraft` command shares: its consoles and how it reports a RolecraftError."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from .errors import RolecraftError

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn a RolecraftError into one red line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RolecraftError as e:
            err.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False)  # "[dpo]" in a message is text
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
