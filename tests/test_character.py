"""Loading characters from every supported input, rejecting broken ones, exporting them again."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from rolecraft.cards import embed_cards, placeholder_png
from rolecraft.character import (
    EXPORT_FORMATS,
    Character,
    Statement,
    character_from_dict,
    character_to_dict,
    detect_language,
    export_character,
    load_character,
    save_character,
    split_sentences,
)
from rolecraft.errors import RolecraftError
from rolecraft.examples import list_examples, load_example


def _sample() -> Character:
    return Character(
        name="Ada",
        statements=[Statement("Ada keeps bees."), Statement("Ada hates wasps.", ["wasp"], "lorebook")],
        passages=["Ada keeps bees on a rooftop.", "She hates wasps."],
        greeting="Hello there.",
        examples=["{{user}}: Hi\nAda: Hello."],
        meta={"note": "kept"},
    )


# --- rolecraft's own format ------------------------------------------------------------------


def test_dict_round_trip_keeps_every_field() -> None:
    c = _sample()
    d = character_to_dict(c)
    assert d["format"] == "rolecraft-character-v1"
    assert d["statements"][1] == {"text": "Ada hates wasps.", "keys": ["wasp"], "source": "lorebook"}
    assert character_from_dict(json.loads(json.dumps(d))) == c


def test_save_and_load_own_format(tmp_path: Path) -> None:
    c = _sample()
    path = save_character(c, tmp_path / "ada.json")
    assert load_character(path) == c
    assert load_character(path, name="Ada Lovelace").name == "Ada Lovelace"


def test_folder_loads_its_character_json(tmp_path: Path) -> None:
    save_character(_sample(), tmp_path / "ada" / "character.json")
    assert load_character(tmp_path / "ada").name == "Ada"


# --- text helpers ------------------------------------------------------------------------------


def test_split_sentences_handles_abbreviations_and_chinese() -> None:
    text = "Dr. Smith met J. K. Rowling in the U.S. Army. It cost 3.5 pounds! Really? 她来了。你好！好吗？"
    assert split_sentences(text) == [
        "Dr. Smith met J. K. Rowling in the U.S. Army.",
        "It cost 3.5 pounds!",
        "Really?",
        "她来了。",
        "你好！",
        "好吗？",
    ]


def test_detect_language() -> None:
    assert detect_language("爱丽丝是一名吉他手，她喜欢 guitar。") == "zh"
    assert detect_language("Alice plays the guitar (吉他).") == "en"


# --- shared data ---------------------------------------------------------------------------------


def test_apc_wiki_alice(shared_data: Path) -> None:
    c = load_character(shared_data / "characters" / "apc" / "wiki_Alice.txt")
    assert c.name == "Alice"
    assert c.language == "en"
    assert "Age: 26 years old." in c.statement_texts
    assert {s.source for s in c.statements} == {"extracted"}
    assert len(c.passages) == 1 and c.passages[0].startswith("Name: Alice Carter.")


def test_wiki_name_from_file_with_space_and_headings_dropped(shared_data: Path) -> None:
    c = load_character(shared_data / "characters" / "apc" / "wiki_Komeiji Koishi.txt")
    assert c.name == "Komeiji Koishi"
    assert "Personality" not in c.statement_texts
    assert all(p.strip() != "Personality" for p in c.passages)


def test_chinese_wiki(shared_data: Path) -> None:
    c = load_character(shared_data / "characters" / "apc" / "wiki_爱丽丝.txt")
    assert c.name == "爱丽丝"
    assert c.language == "zh"
    assert c.statement_texts[:2] == ["名称：爱丽丝·卡特。", "年龄：26岁。"]
    assert all(s.endswith("。") for s in c.statement_texts)


@pytest.mark.parametrize(
    ("file", "name"),
    [("wiki_Beethoven.txt", "Ludwig van Beethoven"), ("wiki_Martin.txt", "Martin Luther King Jr.")],
)
def test_character_llm_title_line_gives_the_name(shared_data: Path, file: str, name: str) -> None:
    c = load_character(shared_data / "characters" / "character_llm" / file)
    assert c.name == name
    assert not any(s.startswith("#") for s in c.statement_texts)
    assert not any(p.startswith("#") for p in c.passages)
    assert load_character(shared_data / "characters" / "character_llm" / file, name="X").name == "X"


def test_apc_statements_json(shared_data: Path) -> None:
    c = load_character(shared_data / "apc_alice" / "Alice.json")
    assert c.name == "Alice"
    assert len(c.statements) == 8
    assert all(s.source == "persona" and s.keys == [] for s in c.statements)
    assert len(c.passages) == 1 and "Alice Carter" in c.passages[0]


def test_plain_statement_list_takes_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "Bea_Stone.json"
    path.write_text(json.dumps(["Bea is a potter.", "Bea lives in Leeds."]), encoding="utf-8")
    c = load_character(path)
    assert c.name == "Bea Stone"
    assert c.statement_texts == ["Bea is a potter.", "Bea lives in Leeds."]


def test_v1_flat_card_json(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"name": "Old", "description": "Old is old.", "first_mes": "Hm?"}))
    c = load_character(path)
    assert (c.name, c.greeting, c.statement_texts) == ("Old", "Hm?", ["Old is old."])


# --- examples ---------------------------------------------------------------------------------------


def test_bundled_examples() -> None:
    assert {"mira", "lin-xiao"} <= set(list_examples())
    mira = load_example("mira")
    assert mira.name == "Mira Holloway" and mira.language == "en"
    assert 14 <= len(mira.statements) <= 18
    assert all("Mira" in s for s in mira.statement_texts)
    assert len(mira.examples) == 2 and 3 <= len(mira.passages) <= 5 and mira.greeting
    lin = load_example("lin-xiao")
    assert lin.language == "zh" and 12 <= len(lin.statements) <= 16
    assert all(detect_language(s) == "zh" for s in lin.statement_texts)
    with pytest.raises(RolecraftError, match="nope"):
        load_example("nope")


# --- export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_then_load_keeps_the_persona(tmp_path: Path, fmt: str) -> None:
    mira = load_example("mira")
    suffix = ".png" if fmt.endswith("png") else ".json"
    path = export_character(mira, fmt, tmp_path / f"out{suffix}")
    back = load_character(path)
    assert back.name == mira.name
    assert back.statement_texts == mira.statement_texts
    if fmt.startswith("card"):
        assert (back.greeting, back.examples, back.passages) == (mira.greeting, mira.examples, mira.passages)


def test_export_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(RolecraftError, match="card-v2-png"):
        export_character(_sample(), "docx", tmp_path / "x.docx")
    assert not list(tmp_path.iterdir())


# --- malformed inputs -------------------------------------------------------------------------------


def _png_with_text(keyword: str, text: bytes) -> bytes:
    png = placeholder_png(size=4)
    body = keyword.encode() + b"\0" + text
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return png[:-12] + chunk + png[-12:]  # the IEND chunk is the last 12 bytes


def _bad_crc_png() -> bytes:
    png = bytearray(embed_cards(None, chara={"spec": "chara_card_v2", "data": {"name": "A"}}))
    png[-13] ^= 0xFF  # last byte of the chara chunk CRC (IEND takes the final 12 bytes)
    return bytes(png)


def _write(name: str, data: bytes | str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        return path

    return make


def _missing(folder: Path) -> Path:
    return folder / "ghost.json"


def _empty_folder(folder: Path) -> Path:
    (folder / "hollow").mkdir()
    return folder / "hollow"


MALFORMED = {
    "missing file": (_missing, "does not exist"),
    "empty file": (_write("empty.txt", ""), "empty"),
    "blank json": (_write("blank.json", "  \n "), "empty"),
    "binary": (_write("blob.txt", b"\x00\x01\x02abc"), "binary"),
    "not utf-8": (_write("latin.txt", "café".encode("latin-1")), "not UTF-8"),
    "broken json": (_write("broken.json", '{"name": "A",\n "x": }'), "line 2, column"),
    "json number": (_write("number.json", "42"), "neither"),
    "json wrong object": (_write("shape.json", '{"hello": "world"}'), "neither"),
    "card without name": (_write("noname.json", '{"spec": "chara_card_v2", "data": {"name": " "}}'), "name"),
    "card data not object": (_write("nodata.json", '{"spec": "chara_card_v3", "data": []}'), "data"),
    "unknown spec": (_write("spec.json", '{"spec": "chara_card_v9", "data": {}}'), "chara_card_v9"),
    "empty list": (_write("none.json", "[]"), "empty list"),
    "non-string statement": (_write("mixed.json", '["ok", 3]'), "item 2"),
    "bad apc row": (_write("apc.json", '[{"character": "A", "statement": 5}]'), "row 1"),
    "bad own statements": (_write("own.json", '{"format": "rolecraft-character-v1", "name": "A", '
                                              '"statements": [{"text": 1}]}'), "position 1"),
    "png without card": (_write("plain.png", placeholder_png(size=4)), "no 'chara' or 'ccv3'"),
    "png bad base64": (_write("b64.png", _png_with_text("chara", b"!!!not base64!!!")), "base64"),
    "png bad json": (_write("json.png", _png_with_text("ccv3", base64.b64encode(b"{nope"))), "not valid JSON"),
    "png bad crc": (_write("crc.png", _bad_crc_png()), "CRC"),
    "png truncated": (_write("cut.png", placeholder_png(size=4)[:30]), "truncated"),
    "not a png": (_write("fake.png", "I am text"), "not a PNG"),
    "unknown suffix": (_write("notes.docx", "hello"), "unsupported file type"),
    "folder without character.json": (_empty_folder, "character.json"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_input_raises_a_clear_error(tmp_path: Path, case: str) -> None:
    make, needle = MALFORMED[case]
    path = make(tmp_path)
    with pytest.raises(RolecraftError) as info:
        load_character(path)
    message = str(info.value)
    assert path.name in message, message
    assert needle in message, message
    assert message.count("\n") == 0
