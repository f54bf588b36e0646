"""Character Card V2/V3 (the SillyTavern family of formats), as JSON and embedded in PNG images.

A card read from a file is kept whole in `Character.meta["card"]`; writing a card starts from that
original and only replaces the fields whose character-side value changed, so unknown fields and
`extensions` keys from other tools survive a round trip through rolecraft.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import struct
import time
import zlib
from typing import Any

from .character import Character, Statement, detect_language, extract_statements, split_paragraphs
from .errors import RolecraftError

V2_SPEC, V3_SPEC = "chara_card_v2", "chara_card_v3"
_V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_V2_DEFAULTS: dict[str, Any] = {
    **{f: "" for f in _V1_FIELDS},
    "creator_notes": "", "system_prompt": "", "post_history_instructions": "", "alternate_greetings": [],
    "tags": [], "creator": "", "character_version": "", "extensions": {},
}  # fmt: skip
_V3_DEFAULTS: dict[str, Any] = {
    "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    "nickname": "", "creator_notes_multilingual": {}, "source": [], "group_only_greetings": [],
}  # fmt: skip
_CHAR_MACRO = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
_START = re.compile(r"<START>", re.IGNORECASE)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_CHUNKS = ("chara", "ccv3")  # V2 and V3 keywords
_TEXT_CHUNK_TYPES = (b"tEXt", b"zTXt", b"iTXt")

# ---------------------------------------------------------------------------------------------
# Card -> Character


def _card_data(card: Any, source: str) -> tuple[dict[str, Any], str]:
    """The dict holding the card fields, and which card version it is."""
    if not isinstance(card, dict):
        raise RolecraftError(f"{source} is not a JSON object, so it cannot be a character card.")
    spec = card.get("spec")
    if spec in (V2_SPEC, V3_SPEC):
        if not isinstance(card.get("data"), dict):
            raise RolecraftError(f"{source} is a {spec} card without a 'data' object.")
        return card["data"], "card-v2" if spec == V2_SPEC else "card-v3"
    if spec is not None:
        raise RolecraftError(f"{source} declares card spec '{spec}', which rolecraft does not know "
                             f"(expected {V2_SPEC} or {V3_SPEC}).")
    if "name" in card and ("description" in card or "first_mes" in card):
        return card, "card-v1"  # V1 cards are flat: the fields sit at the top level
    raise RolecraftError(f"{source} is not a character card (it has no 'spec' and no name with a "
                         "description or first_mes).")


def _check_fields(data: dict[str, Any], source: str) -> None:
    """Check the fields rolecraft reads; the rest pass through untouched, whatever their shape."""
    for key in _V1_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise RolecraftError(f"{source} is a character card whose '{key}' field is not text.")
    if data.get("extensions") is not None and not isinstance(data["extensions"], dict):
        raise RolecraftError(f"{source} is a character card whose 'extensions' field is not an object.")
    book = data.get("character_book")
    if book is None:
        return
    entries = book.get("entries", []) if isinstance(book, dict) else None
    if not isinstance(entries, list):
        raise RolecraftError(f"{source} is a character card whose character_book has no list of entries.")
    for i, entry in enumerate(entries):
        keys = entry.get("keys", []) if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("content"), str)
                and isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise RolecraftError(f"{source} is a character card whose character_book entry {i + 1} is "
                                 "malformed (it needs 'content' text and a 'keys' list).")


def _fill(text: str | None, name: str) -> str:
    """Cards write the character as {{char}}; statements should name the character outright."""
    return _CHAR_MACRO.sub(lambda _: name, text or "").strip()


def _text_hash(data: dict[str, Any]) -> str:
    text = (data.get("description") or "") + "\n\x00\n" + (data.get("personality") or "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _stored_statements(data: dict[str, Any]) -> list[Statement] | None:
    """Persona statements rolecraft saved in the card, if the text they came from is unchanged."""
    ext = (data.get("extensions") or {}).get("rolecraft")
    if not isinstance(ext, dict) or ext.get("text_hash") != _text_hash(data):
        return None  # another tool edited the description since: extract afresh
    items = ext.get("statements")
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("text"), str)):
            return None
        keys = item.get("keys", [])
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            return None
        out.append(Statement(item["text"], list(keys), str(item.get("source", "persona"))))
    return out


def _passages(data: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    """Profile passages, and the subset (description + personality) that persona facts come from."""
    persona = split_paragraphs(_fill(data.get("description"), name))
    for para in split_paragraphs(_fill(data.get("personality"), name)):
        # a bare trait list ("shy, kind") says nothing on its own: say whose traits they are
        persona.append(para if para.endswith((".", "。", "!", "！")) else f"{name}'s personality: {para}")
    scenario = [f"Scenario: {p}" for p in split_paragraphs(_fill(data.get("scenario"), name))]
    return persona + scenario, persona


def _lorebook(data: dict[str, Any], name: str) -> list[Statement]:
    book = data.get("character_book") or {}
    out = []
    for entry in book.get("entries", []):
        content = _fill(entry["content"], name)
        if entry.get("enabled", True) is not False and content:
            out.append(Statement(content, [k for k in entry.get("keys", []) if k.strip()], "lorebook"))
    return out


def card_to_character(card: dict[str, Any], source: str = "card") -> Character:
    """A Character from a V1/V2/V3 card; the card itself is kept in meta["card"] for round trips."""
    data, kind = _card_data(card, source)
    _check_fields(data, source)
    name = (data.get("name") or "").strip()
    if not name:
        raise RolecraftError(f"{source} is a character card without a name.")
    passages, persona = _passages(data, name)
    statements = _stored_statements(data)
    if statements is None:
        statements = extract_statements(persona)
    greeting = _fill(data.get("first_mes"), name)
    examples = [e.strip() for e in _START.split(_fill(data.get("mes_example"), name)) if e.strip()]
    sample = " ".join([*passages, greeting, *examples])
    return Character(
        name=name,
        statements=statements + _lorebook(data, name),
        passages=passages,
        greeting=greeting,
        examples=examples,
        language=detect_language(sample),
        meta={"card": copy.deepcopy(card), "source_format": kind},
    )


# ---------------------------------------------------------------------------------------------
# Character -> Card


def _merge_book(book: Any, lore: list[Statement], name: str) -> dict[str, Any] | None:
    """Lorebook statements as character_book entries, reusing matching original entries (and their
    extra fields); disabled original entries are kept since rolecraft never saw them."""
    book = copy.deepcopy(book) if isinstance(book, dict) else {"extensions": {}, "entries": []}
    old = [e for e in book.get("entries", []) if isinstance(e, dict)]
    disabled = [e for e in old if e.get("enabled", True) is False]
    pool = [e for e in old if e.get("enabled", True) is not False]
    entries = []
    for s in lore:
        match = next((e for e in pool if _fill(e.get("content"), name) == s.text and e.get("keys") == s.keys),
                     None) or next((e for e in pool if _fill(e.get("content"), name) == s.text), None)
        if match is not None:
            pool.remove(match)
            match["keys"] = list(s.keys)
        else:
            match = {"keys": list(s.keys), "content": s.text, "extensions": {}, "enabled": True}
        entries.append(match)
    entries += disabled
    if not entries and not old:
        return None
    for i, entry in enumerate(entries):
        entry.setdefault("insertion_order", i)
        entry.setdefault("extensions", {})
    book["entries"] = entries
    return book


def _fresh_fields(c: Character) -> dict[str, Any]:
    persona = [s.text for s in c.statements if s.source != "lorebook"]
    return {
        "name": c.name,
        "description": "\n\n".join(c.passages) if c.passages else " ".join(persona),
        "personality": "",
        "scenario": "",
        "first_mes": c.greeting,
        "mes_example": "\n".join(f"<START>\n{e}" for e in c.examples),
    }


def _original_card(c: Character) -> tuple[dict[str, Any], dict[str, Any], Character] | None:
    """(data fields, extra top-level fields, character as first read) of the card `c` came from."""
    card = c.meta.get("card")
    if not isinstance(card, dict):
        return None
    try:
        first = card_to_character(card)
        data, kind = _card_data(card, "card")
    except RolecraftError:
        return None  # meta was edited into something unreadable: build the card afresh
    if kind == "card-v1":
        return ({k: copy.deepcopy(v) for k, v in card.items() if k in _V2_DEFAULTS},
                {k: copy.deepcopy(v) for k, v in card.items() if k not in _V2_DEFAULTS}, first)
    top = {k: copy.deepcopy(v) for k, v in card.items() if k not in ("spec", "spec_version", "data")}
    return copy.deepcopy(data), top, first


def _statement_tuples(statements: list[Statement]) -> list[tuple[str, list[str], str]]:
    return [(s.text, s.keys, s.source) for s in statements]


def character_to_card(c: Character, version: int = 2) -> dict[str, Any]:
    """A V2 or V3 card for `c`; a card it was imported from is updated in place, not rebuilt."""
    if version not in (2, 3):
        raise ValueError(f"card version must be 2 or 3, not {version!r}")
    if not c.name.strip():
        raise RolecraftError("A character needs a name before it can be written as a character card.")
    lore = [s for s in c.statements if s.source == "lorebook"]
    fresh = _fresh_fields(c)
    original = _original_card(c)
    now = int(time.time())
    if original is None:
        data, top = dict(fresh), {}
        book = _merge_book(None, lore, c.name)
        if book:
            data["character_book"] = book
        data.update(creation_date=now, modification_date=now)
    else:
        data, top, first = original
        changes = {
            "name": c.name != first.name,
            "first_mes": c.greeting != first.greeting,
            "mes_example": c.examples != first.examples,
        }
        for key, changed in changes.items():
            if changed:
                data[key] = fresh[key]
        if c.passages != first.passages:
            data.update(description=fresh["description"], personality="", scenario="")
        lore_changed = [(s.text, s.keys) for s in lore] != [(s.text, s.keys) for s in first.lorebook]
        if lore_changed:
            data["character_book"] = _merge_book(data.get("character_book"), lore, c.name)
            if data["character_book"] is None:
                del data["character_book"]
        if any(changes.values()) or c.passages != first.passages or lore_changed:
            data["modification_date"] = now
    _keep_statements(c, data)
    for key, default in _V2_DEFAULTS.items():
        data.setdefault(key, copy.deepcopy(default))
    if version == 3:
        for key, default in _V3_DEFAULTS.items():
            data.setdefault(key, copy.deepcopy(default))
    else:
        for key in (*_V3_DEFAULTS, "creation_date", "modification_date"):
            data.pop(key, None)
    card: dict[str, Any] = {
        "spec": V2_SPEC if version == 2 else V3_SPEC,
        "spec_version": "2.0" if version == 2 else "3.0",
        "data": data,
    }
    for key, value in top.items():  # e.g. SillyTavern's top-level V1 copies, kept in sync with data
        card[key] = data.get(key, value) if key in _V1_FIELDS else value
    return card


def _keep_statements(c: Character, data: dict[str, Any]) -> None:
    """Store persona statements in extensions.rolecraft when re-reading the card would not yield them."""
    persona = [s for s in c.statements if s.source != "lorebook"]
    ext = dict(data.get("extensions") or {})
    ext.pop("rolecraft", None)
    probe = dict(data, extensions=ext, name=c.name)
    _, from_text = _passages(probe, c.name)
    if _statement_tuples(extract_statements(from_text)) != _statement_tuples(persona):
        ext["rolecraft"] = {
            "text_hash": _text_hash(data),
            "statements": [{"text": s.text, "keys": list(s.keys), "source": s.source} for s in persona],
        }
    data["extensions"] = ext


# ---------------------------------------------------------------------------------------------
# PNG


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_chunks(data: bytes, source: str = "image") -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk up to IEND, with the signature and each CRC checked."""
    if not data.startswith(PNG_SIGNATURE):
        raise RolecraftError(f"{source} is not a PNG image (it lacks the PNG signature).")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise RolecraftError(f"{source} is a truncated PNG image.")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data) or not ctype.isalpha():
            raise RolecraftError(f"{source} is a damaged or truncated PNG image (bad chunk at byte {pos}).")
        body = data[pos + 8 : pos + 8 + length]
        if zlib.crc32(ctype + body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise RolecraftError(f"{source} is a damaged PNG image: its {ctype.decode()} chunk fails the "
                                 "CRC check.")
        chunks.append((ctype, body))
        pos = end
        if ctype == b"IEND":
            break
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise RolecraftError(f"{source} is a damaged or truncated PNG image (it must start with IHDR and "
                             "end with IEND).")
    return chunks


def _keyword(body: bytes) -> str:
    return body.partition(b"\0")[0].decode("latin-1")


def _chunk_text(ctype: bytes, body: bytes) -> str:
    """The text of a tEXt, zTXt or iTXt chunk (zlib errors propagate to the caller)."""
    _, _, rest = body.partition(b"\0")
    if ctype == b"tEXt":
        return rest.decode("latin-1")
    if ctype == b"zTXt":
        return zlib.decompress(rest[1:]).decode("latin-1")
    compressed, rest = rest[:1] == b"\x01", rest[2:]  # iTXt: flag, method, language\0, keyword\0, text
    _, _, rest = rest.partition(b"\0")
    _, _, rest = rest.partition(b"\0")
    return (zlib.decompress(rest) if compressed else rest).decode("utf-8")


def _decode_card(text: str, keyword: str, source: str) -> dict[str, Any]:
    text = text.strip()
    if not text.startswith("{"):  # the norm is base64 JSON; some tools write the JSON as is
        try:
            text = base64.b64decode("".join(text.split()), validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise RolecraftError(f"{source} has a '{keyword}' chunk that is not valid base64 UTF-8 "
                                 "text.") from exc
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RolecraftError(f"{source} has a '{keyword}' chunk whose decoded text is not valid JSON "
                             f"({exc.msg} at line {exc.lineno}, column {exc.colno}).") from exc
    if not isinstance(card, dict):
        raise RolecraftError(f"{source} has a '{keyword}' chunk that holds no JSON object.")
    return card


def read_png_card(data: bytes, source: str = "image") -> dict[str, Any]:
    """The card embedded in a PNG; the V3 'ccv3' chunk wins over the V2 'chara' one."""
    found: dict[str, str] = {}
    for ctype, body in png_chunks(data, source):
        keyword = _keyword(body) if ctype in _TEXT_CHUNK_TYPES else ""
        if keyword in CARD_CHUNKS and keyword not in found:
            try:
                found[keyword] = _chunk_text(ctype, body)
            except (zlib.error, UnicodeDecodeError) as exc:
                raise RolecraftError(f"{source} has a '{keyword}' chunk that cannot be decompressed or "
                                     "decoded.") from exc
    if not found:
        raise RolecraftError(f"{source} is a PNG image but holds no character card (no 'chara' or 'ccv3' "
                             "text chunk).")
    keyword = "ccv3" if "ccv3" in found else "chara"
    return _decode_card(found[keyword], keyword, source)


def placeholder_png(size: int = 64, seed: str = "") -> bytes:
    """A plain square in a colour picked from `seed`, for cards whose character has no picture."""
    r, g, b = hashlib.sha256(seed.encode("utf-8")).digest()[:3]
    rows = []
    for y in range(size):  # a soft vertical fade so the image is not a flat block
        shade = 0.6 + 0.4 * y / max(size - 1, 1)
        rows.append(b"\0" + bytes((int(r * shade), int(g * shade), int(b * shade))) * size)
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + \
        _chunk(b"IEND", b"")


def embed_cards(
    image: bytes | None,
    chara: dict[str, Any] | None = None,
    ccv3: dict[str, Any] | None = None,
    source: str = "image",
    seed: str = "",
) -> bytes:
    """`image` (or a placeholder) with its old card chunks replaced by `chara` (V2) and/or `ccv3` (V3)."""
    png = image if image is not None else placeholder_png(seed=seed)
    chunks = [(t, b) for t, b in png_chunks(png, source)
              if not (t in _TEXT_CHUNK_TYPES and _keyword(b) in CARD_CHUNKS)]
    new = []
    for keyword, card in (("chara", chara), ("ccv3", ccv3)):
        if card is not None:
            payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
            new.append((b"tEXt", keyword.encode("latin-1") + b"\0" + payload))
    chunks[-1:-1] = new  # just before IEND
    return PNG_SIGNATURE + b"".join(_chunk(t, b) for t, b in chunks)
