"""Bundled example characters (rolecraft's own JSON), so a first run needs no input files."""

from __future__ import annotations

import json
from importlib import resources

from ..character import Character, character_from_dict
from ..errors import RolecraftError


def list_examples() -> list[str]:
    return sorted(f.name[:-5] for f in resources.files(__package__).iterdir() if f.name.endswith(".json"))


def load_example(example_id: str) -> Character:
    if example_id not in list_examples():
        raise RolecraftError(f"There is no bundled example '{example_id}' (available: "
                             f"{', '.join(list_examples())}).")
    text = resources.files(__package__).joinpath(f"{example_id}.json").read_text(encoding="utf-8")
    return character_from_dict(json.loads(text), source=f"example '{example_id}'")
