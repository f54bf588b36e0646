"""The workspace: one folder per character under `paths.home()`.

Layout: `<root>/<slug>/character.json`, an optional `avatar.png` (the picture of an imported card),
and artefact folders (`datasets/`, `adapters/`, `reports/`) that the steps producing them create.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import paths
from .character import Character, character_to_dict, load_character
from .errors import RolecraftError

CHARACTER_FILE = "character.json"
AVATAR_FILE = "avatar.png"


class Workspace:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else paths.home()

    def path(self, slug: str) -> Path:
        """The folder of a character; any name is slugged first, and the result must sit inside root."""
        root = self.root.resolve()
        folder = (root / paths.slugify(slug)).resolve()
        if folder.parent != root:  # slugify already forbids separators; this guards against its bugs
            raise RolecraftError(f"'{slug}' does not name a folder inside the workspace {root}.")
        return folder

    def exists(self, slug: str) -> bool:
        return (self.path(slug) / CHARACTER_FILE).is_file()

    def add(self, character: Character, overwrite: bool = False) -> str:
        """Store `character` under the slug of its name and return that slug."""
        if not character.name.strip():
            raise RolecraftError("A character needs a name before it can be added to the workspace.")
        slug = paths.slugify(character.name)
        folder = self.path(slug)
        if self.exists(slug) and not overwrite:
            raise RolecraftError(f"A character '{slug}' already exists in the workspace {self.root}; "
                                 "choose another name or overwrite it.")
        created = not folder.exists()
        data = character_to_dict(character)
        try:
            image = character.meta.get("image_path")
            if isinstance(image, str) and image and Path(image).is_file():
                # keep the picture with the character, so card exports still have it later
                avatar = folder / AVATAR_FILE
                if Path(image).resolve() != avatar:
                    paths.atomic_write_bytes(avatar, Path(image).read_bytes())
                data["meta"] = {**data["meta"], "image_path": AVATAR_FILE}
            paths.atomic_write_json(folder / CHARACTER_FILE, data)
        except BaseException:
            if created:  # nothing half-made stays behind
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return slug

    def import_file(self, source: str | Path, name: str | None = None, overwrite: bool = False) -> str:
        """Load any supported file and add it; a file that fails to load leaves the workspace untouched."""
        return self.add(load_character(source, name), overwrite=overwrite)

    def get(self, name_or_slug: str) -> Character:
        slug = paths.slugify(name_or_slug)
        if not self.exists(slug):
            available = ", ".join(self.list()) or "none yet"
            raise RolecraftError(f"There is no character '{name_or_slug}' in the workspace {self.root} "
                                 f"(available: {available}).")
        return load_character(self.path(slug))

    def remove(self, slug: str) -> None:
        if not self.exists(slug):
            raise RolecraftError(f"There is no character '{slug}' in the workspace {self.root} to remove.")
        shutil.rmtree(self.path(slug))

    def resolve(self, ref: str | Path) -> Character:
        """A character from a file or folder path, else a workspace character, else a bundled example."""
        from .examples import list_examples, load_example

        text = str(ref)
        candidate = Path(text).expanduser()
        # a bare word that happens to match a stray folder in the current directory is not a path
        looks_like_path = candidate.is_file() or (candidate / CHARACTER_FILE).is_file() or "/" in text
        if text and candidate.exists() and looks_like_path:
            return load_character(candidate)
        if text.strip() and self.exists(text):
            return self.get(text)
        if text in list_examples():
            return load_example(text)
        known = ", ".join(self.list()) or "none"
        raise RolecraftError(f"'{text}' is neither a file, a workspace character (yours: {known}), nor a "
                             f"bundled example ({', '.join(list_examples())}).")

    def list(self) -> list[str]:  # defined last: inside the class body it shadows the builtin name
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CHARACTER_FILE).is_file())
