"""Character Card V2/V3: reading, writing, PNG embedding, and lossless round trips."""

from __future__ import annotations

import base64
import copy
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from rolecraft.cards import (
    card_to_character,
    character_to_card,
    embed_cards,
    placeholder_png,
    png_chunks,
    read_png_card,
)
from rolecraft.character import Character, Statement, export_character, load_character
from rolecraft.errors import RolecraftError
from rolecraft.examples import load_example


def _card(spec: str = "chara_card_v2") -> dict[str, Any]:
    return {
        "spec": spec,
        "spec_version": "2.0" if spec == "chara_card_v2" else "3.0",
        "data": {
            "name": "Nell",
            "description": "{{char}} is a ferry pilot on the Clyde. She is thirty-one.\n\nShe grew up in Greenock.",
            "personality": "stubborn, warm",
            "scenario": "{{user}} boards the last ferry of the night.",
            "first_mes": "Mind the gap, {{user}}.",
            "mes_example": "<START>\n{{user}}: Busy night?\n{{char}}: Always.\n<START>\n{{user}}: Cold?\n"
            "{{char}}: Freezing.",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": ["Evening."],
            "tags": ["ferry"],
            "creator": "tester",
            "character_version": "1.2",
            "extensions": {"depth_prompt": {"depth": 4, "prompt": "x"}, "talkativeness": "0.5"},
            "character_book": {
                "name": "Nell's book",
                "extensions": {"custom": True},
                "entries": [
                    {"keys": ["Greenock"], "content": "{{char}} still visits her mother in Greenock.",
                     "enabled": True, "insertion_order": 0, "extensions": {"probability": 70}, "id": 7},
                    {"keys": ["boat"], "content": "Hidden.", "enabled": False, "insertion_order": 1,
                     "extensions": {}},
                ],
            },
            "x_unknown_field": {"kept": [1, 2]},
        },
        "x_top_level": "also kept",
    }


def _nell() -> Character:
    return card_to_character(_card(), "nell.json")


def test_card_fields_become_a_character() -> None:
    c = _nell()
    assert c.name == "Nell"
    assert c.greeting == "Mind the gap, {{user}}."
    assert c.examples == ["{{user}}: Busy night?\nNell: Always.", "{{user}}: Cold?\nNell: Freezing."]
    assert c.passages == [
        "Nell is a ferry pilot on the Clyde. She is thirty-one.",
        "She grew up in Greenock.",
        "Nell's personality: stubborn, warm",
        "Scenario: {{user}} boards the last ferry of the night.",
    ]
    extracted = [s.text for s in c.statements if s.source == "extracted"]
    assert extracted == ["Nell is a ferry pilot on the Clyde.", "She is thirty-one.", "She grew up in Greenock.",
                         "Nell's personality: stubborn, warm"]
    assert c.lorebook == [Statement("Nell still visits her mother in Greenock.", ["Greenock"], "lorebook")]
    assert c.meta["card"] == _card() and c.meta["source_format"] == "card-v2"


def test_unchanged_card_round_trips_exactly() -> None:
    original = _card()
    assert character_to_card(_nell(), 2) == original


def test_v2_png_round_trip(tmp_path: Path) -> None:
    png = embed_cards(placeholder_png(seed="Nell"), chara=_card())
    (tmp_path / "nell.png").write_bytes(png)
    c = load_character(tmp_path / "nell.png")
    assert c.lorebook[0].keys == ["Greenock"]
    out = export_character(c, "card-v2-png", tmp_path / "out.png")
    card = read_png_card(out.read_bytes())
    assert card == _card()
    # the picture itself is carried over unchanged, and there is exactly one card chunk
    idat = [b for t, b in png_chunks(out.read_bytes()) if t == b"IDAT"]
    assert idat == [b for t, b in png_chunks(png) if t == b"IDAT"]
    keywords = [b.split(b"\0")[0] for t, b in png_chunks(out.read_bytes()) if t == b"tEXt"]
    assert keywords == [b"chara"]


def test_v3_json_round_trip_with_edits(tmp_path: Path) -> None:
    original = _card("chara_card_v3")
    original["data"].update(nickname="Nellie", group_only_greetings=[], creation_date=1700000000)
    path = tmp_path / "nell.json"
    path.write_text(json.dumps(original), encoding="utf-8")
    c = load_character(path)
    assert c.meta["source_format"] == "card-v3"
    # an edit on the rolecraft side: a new lorebook fact and a changed greeting
    c.statements.append(Statement("Nell once steered through a whiteout.", ["fog", "storm"], "lorebook"))
    c.greeting = "All aboard."
    out = export_character(c, "card-v3-json", tmp_path / "out.json")
    card = json.loads(out.read_text(encoding="utf-8"))
    data = card["data"]
    assert card["spec"] == "chara_card_v3" and card["spec_version"] == "3.0"
    assert data["first_mes"] == "All aboard."
    assert data["extensions"] == original["data"]["extensions"]
    assert data["x_unknown_field"] == {"kept": [1, 2]} and card["x_top_level"] == "also kept"
    assert data["nickname"] == "Nellie" and data["creation_date"] == 1700000000
    assert data["description"] == original["data"]["description"]
    entries = data["character_book"]["entries"]
    assert entries[0] == original["data"]["character_book"]["entries"][0]  # extra fields survive
    assert entries[1]["keys"] == ["fog", "storm"] and entries[1]["content"] == "Nell once steered through a whiteout."
    assert any(e["enabled"] is False and e["content"] == "Hidden." for e in entries)
    assert data["character_book"]["extensions"] == {"custom": True}
    back = load_character(out)
    assert back.lorebook == c.lorebook
    assert back.greeting == "All aboard."


def test_v2_json_card(tmp_path: Path) -> None:
    path = tmp_path / "nell.json"
    path.write_text(json.dumps(_card()), encoding="utf-8")
    c = load_character(path)
    assert c.name == "Nell" and len(c.examples) == 2
    export_character(c, "card-v2-json", tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8")) == _card()


def test_ccv3_chunk_wins_over_chara() -> None:
    v2, v3 = _card(), _card("chara_card_v3")
    v3["data"]["name"] = "Nell Three"
    c = card_to_character(read_png_card(embed_cards(None, chara=v2, ccv3=v3)))
    assert c.name == "Nell Three"


def test_card_v3_png_writes_both_chunks(tmp_path: Path) -> None:
    out = export_character(load_example("mira"), "card-v3-png", tmp_path / "mira.png")
    texts = {b.split(b"\0")[0]: b.split(b"\0", 1)[1] for t, b in png_chunks(out.read_bytes()) if t == b"tEXt"}
    assert set(texts) == {b"chara", b"ccv3"}
    assert json.loads(base64.b64decode(texts[b"chara"]))["spec"] == "chara_card_v2"
    assert json.loads(base64.b64decode(texts[b"ccv3"]))["spec"] == "chara_card_v3"


def test_character_without_card_builds_one() -> None:
    c = Character(
        name="Ona",
        statements=[Statement("Ona sings."), Statement("Ona fears owls.", ["owl"], "lorebook")],
        greeting="Hi.",
        examples=["{{user}}: Sing?\nOna: La."],
    )
    data = character_to_card(c, 3)["data"]
    assert data["description"] == "Ona sings."  # no passages: persona statements become the description
    assert data["character_book"]["entries"][0]["keys"] == ["owl"]
    assert data["mes_example"] == "<START>\n{{user}}: Sing?\nOna: La."
    assert isinstance(data["creation_date"], int)
    back = card_to_character(character_to_card(c, 2))
    assert [(s.text, s.keys, s.source) for s in back.statements] == [(s.text, s.keys, s.source) for s in c.statements]


def test_persona_statements_survive_a_card_even_when_text_would_not_give_them() -> None:
    mira = load_example("mira")
    back = card_to_character(character_to_card(mira, 3))
    assert back.statements == mira.statements
    # another tool rewrites the description: the stored statements are stale, so they are re-extracted
    card = character_to_card(mira, 2)
    card["data"]["description"] = "Mira Holloway is a retired keeper."
    assert card_to_character(card).statement_texts == ["Mira Holloway is a retired keeper."]


def test_renaming_updates_name_and_top_level_copies() -> None:
    card = _card()
    card["name"] = "Nell"  # SillyTavern also writes V1 fields at the top level
    c = card_to_character(card)
    c.name = "Eleanor"
    out = character_to_card(c, 2)
    assert out["data"]["name"] == "Eleanor" and out["name"] == "Eleanor"
    assert card_to_character(out).examples[0].endswith("Eleanor: Always.")


def test_itxt_ztxt_and_raw_json_chunks_are_read() -> None:
    payload = json.dumps(_card()).encode()

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))

    base = placeholder_png(size=2)
    itxt = chunk(b"iTXt", b"chara\0\x01\0en\0\0" + zlib.compress(base64.b64encode(payload)))
    ztxt = chunk(b"zTXt", b"chara\0\0" + zlib.compress(base64.b64encode(payload)))
    raw = chunk(b"tEXt", b"chara\0" + payload)
    for extra in (itxt, ztxt, raw):
        assert read_png_card(base[:-12] + extra + base[-12:])["data"]["name"] == "Nell"


def test_placeholder_png_is_valid() -> None:
    png = placeholder_png(size=8, seed="x")
    chunks = dict(png_chunks(png))
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    assert (width, height) == (8, 8)
    assert len(zlib.decompress(chunks[b"IDAT"])) == 8 * (1 + 8 * 3)


def test_card_errors_name_the_source() -> None:
    bad = copy.deepcopy(_card())
    bad["data"]["description"] = ["not", "text"]
    with pytest.raises(RolecraftError, match="nell.png .*'description'"):
        card_to_character(bad, "nell.png")
    bad = copy.deepcopy(_card())
    bad["data"]["character_book"]["entries"][0]["keys"] = "Greenock"
    with pytest.raises(RolecraftError, match="entry 1"):
        card_to_character(bad, "nell.png")
    with pytest.raises(RolecraftError, match="photo.png is not a PNG"):
        embed_cards(b"GIF89a", chara=_card(), source="photo.png")
