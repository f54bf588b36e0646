"""The characters a server offers: every workspace character, then bundled examples it does not shadow.

Ids are looked up in that list and nothing else, so a model id from a request never reaches the
file system as a path. Characters are re-read when their file changes, so `rolecraft import` while
the server runs is picked up by the next request.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..character import Character
from ..examples import list_examples, load_example
from ..workspace import CHARACTER_FILE, Workspace


class Catalog:
    def __init__(self, workspace: Workspace, examples: bool = True):
        self.workspace = workspace
        self.examples = examples
        self._cache: dict[str, tuple[float, Character]] = {}
        self._lock = threading.Lock()

    def ids(self) -> list[str]:
        own = self.workspace.list()
        extra = [e for e in list_examples() if e not in own] if self.examples else []
        return own + extra

    def get(self, character_id: str) -> Character | None:
        """The character with this id, or None (never raises for an unknown id)."""
        own = self.workspace.list()
        if character_id in own:
            stamp = (Path(self.workspace.root) / character_id / CHARACTER_FILE).stat().st_mtime
            with self._lock:
                cached = self._cache.get(character_id)
            if cached and cached[0] == stamp:
                return cached[1]
            character = self.workspace.get(character_id)
            with self._lock:
                self._cache[character_id] = (stamp, character)
            return character
        if self.examples and character_id in list_examples():
            with self._lock:
                cached = self._cache.get(f"example:{character_id}")
            if cached is None:
                cached = (0.0, load_example(character_id))
                with self._lock:
                    self._cache[f"example:{character_id}"] = cached
            return cached[1]
        return None
