"""The workspace: adding, finding and removing characters, safely and atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rolecraft.workspace as workspace_module
from rolecraft.cards import embed_cards, placeholder_png, png_chunks
from rolecraft.character import Character, Statement, export_character, save_character
from rolecraft.errors import RolecraftError
from rolecraft.examples import load_example
from rolecraft.workspace import Workspace


def _ada(name: str = "Ada Lovelace") -> Character:
    return Character(name=name, statements=[Statement(f"{name} writes programs.")])


def test_add_get_list_remove(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    assert ws.list() == []
    slug = ws.add(_ada())
    assert slug == "ada-lovelace"
    assert ws.exists("Ada Lovelace") and ws.exists(slug)
    assert (tmp_path / "ws" / slug / "character.json").is_file()
    assert not (tmp_path / "ws" / slug / "datasets").exists()  # artefact folders are made lazily
    assert ws.get("Ada Lovelace") == _ada()
    assert ws.list() == [slug]
    ws.remove(slug)
    assert ws.list() == [] and not ws.exists(slug)
    with pytest.raises(RolecraftError, match="ada-lovelace"):
        ws.remove(slug)


def test_add_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.add(_ada())
    changed = _ada()
    changed.greeting = "Hello."
    with pytest.raises(RolecraftError, match="already exists"):
        ws.add(changed)
    assert ws.get("ada-lovelace").greeting == ""
    ws.add(changed, overwrite=True)
    assert ws.get("ada-lovelace").greeting == "Hello."


def test_get_missing_lists_what_is_there(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ws.add(_ada("Bea"))
    with pytest.raises(RolecraftError, match="available: bea"):
        ws.get("Zed")


def test_default_root_follows_rolecraft_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLECRAFT_HOME", str(tmp_path / "home"))
    assert Workspace().root == tmp_path / "home"


@pytest.mark.parametrize("name", ["../../etc", "..", ".", "/abs", "a/b", "", "  ", "a\\..\\b", "~root"])
def test_paths_always_stay_inside_the_root(tmp_path: Path, name: str) -> None:
    ws = Workspace(tmp_path / "ws")
    folder = ws.path(name)
    assert folder.parent == (tmp_path / "ws").resolve()
    assert folder.name not in ("", ".", "..")
    slug = ws.add(_ada(name) if name.strip() else _ada("x"))
    assert (ws.root.resolve() / slug / "character.json").is_file()
    assert list(tmp_path.iterdir()) == [tmp_path / "ws"]


def test_failed_import_writes_nothing(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    bad = tmp_path / "bad.json"
    bad.write_text('{"spec": "chara_card_v2", "data": {"name": ""}}', encoding="utf-8")
    with pytest.raises(RolecraftError, match="bad.json"):
        ws.import_file(bad)
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())


def test_failed_write_leaves_no_half_made_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path)

    def broken(path: Path, obj: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(workspace_module.paths, "atomic_write_json", broken)
    with pytest.raises(OSError):
        ws.add(_ada())
    assert list(tmp_path.iterdir()) == []


def test_resolve_prefers_file_then_workspace_then_example(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    file = save_character(_ada("From File"), tmp_path / "c.json")
    assert ws.resolve(file).name == "From File"
    assert ws.resolve("mira").name == "Mira Holloway"  # the bundled example
    ws.add(_ada("Mira"))
    assert ws.resolve("mira").name == "Mira"  # a workspace character shadows the example
    assert ws.resolve("lin-xiao").language == "zh"
    with pytest.raises(RolecraftError, match="nobody"):
        ws.resolve("nobody")


def test_imported_card_keeps_its_picture(tmp_path: Path) -> None:
    image = placeholder_png(size=16, seed="photo")
    card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Pic", "description": "Pic is."}}
    (tmp_path / "pic.png").write_bytes(embed_cards(image, chara=card))
    ws = Workspace(tmp_path / "ws")
    slug = ws.import_file(tmp_path / "pic.png")
    (tmp_path / "pic.png").unlink()  # the workspace has its own copy now
    stored = json.loads((ws.path(slug) / "character.json").read_text(encoding="utf-8"))
    assert stored["meta"]["image_path"] == "avatar.png"
    out = export_character(ws.get(slug), "card-v2-png", tmp_path / "out.png")
    assert [b for t, b in png_chunks(out.read_bytes()) if t == b"IDAT"] == [
        b for t, b in png_chunks(image) if t == b"IDAT"
    ]


def test_example_round_trips_through_the_workspace(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    lin = load_example("lin-xiao")
    slug = ws.add(lin)
    assert slug == "林晓"
    assert ws.get(slug) == lin
