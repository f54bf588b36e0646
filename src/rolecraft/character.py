"""A role-play character: who it is (persona statements, profile passages) and how it talks.

Loaders and exporters for the formats users already have live at the bottom of this module
(wiki text, statements JSON, rolecraft's own JSON) and in `cards.py` (Character Card V2/V3).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RolecraftError
from .paths import atomic_write_bytes, atomic_write_json, slugify


@dataclass
class Statement:
    """One atomic persona fact. `keys` are lorebook trigger words (empty: always in force)."""

    text: str
    keys: list[str] = field(default_factory=list)
    source: str = "persona"  # persona | lorebook | extracted


@dataclass
class Character:
    name: str
    statements: list[Statement] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)  # profile text, one paragraph each
    greeting: str = ""
    examples: list[str] = field(default_factory=list)  # example dialogues, as written by the author
    language: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)  # free metadata; card fields kept for round trips

    @property
    def statement_texts(self) -> list[str]:
        return [s.text for s in self.statements]

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def lorebook(self) -> list[Statement]:
        """Statements that only apply when one of their keys comes up."""
        return [s for s in self.statements if s.source == "lorebook"]


FORMAT = "rolecraft-character-v1"
EXPORT_FORMATS = ("card-v2-png", "card-v2-json", "card-v3-json", "card-v3-png", "statements", "rolecraft")
_TEXT_SUFFIXES = {".txt", ".md", ".text"}

# ---------------------------------------------------------------------------------------------
# Text helpers shared with cards.py


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
# Sentence end: CJK marks need no space after them; Latin ones are checked in _is_boundary.
_END = re.compile(r"([。！？]+|[.!?]+)([\"'”’)\]」』）]*)")
_TERMINAL = tuple("。！？.!?…\"'”’)」』）")
# Words whose trailing '.' rarely ends a sentence (case-sensitive on purpose: "no." may end one).
_ABBREVIATIONS = {
    "Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Jr", "Sr", "Mt", "No", "vs", "Gen", "Col", "Lt", "Capt",
    "Rev", "Sgt", "Fr", "approx", "c", "ca", "cf", "al", "Vol", "Ch", "Fig",
}  # fmt: skip


def detect_language(text: str) -> str:
    """'zh' when CJK characters outnumber Latin letters, else 'en' (the only two we tell apart)."""
    return "zh" if len(_CJK.findall(text)) > len(_LATIN.findall(text)) else "en"


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _is_boundary(line: str, m: re.Match[str]) -> bool:
    if m.group(1)[0] in "。！？":
        return True
    before, rest = line[: m.start()], line[m.end() :]
    if before and _CJK.match(before[-1]):  # "好!" inside Chinese text needs no space either
        return True
    if rest and not rest[0].isspace():  # 3.5, e.g.x, URLs
        return False
    following = rest.lstrip()[:1]
    if following.islower():  # "e.g. the", "Ph.D. from"
        return False
    if m.group(1) == ".":
        word = re.search(r"[\w.]+$", before)
        if word and (word[0] in _ABBREVIATIONS or "." in word[0] or (len(word[0]) == 1 and word[0].isupper())):
            return False  # Dr. Smith, U.S. Army, J. K. Rowling
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`; line breaks always end one (profiles are often 'Field: value' lines)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        start = 0
        for m in _END.finditer(line):
            if _is_boundary(line, m):
                piece = line[start : m.end()].strip()
                if piece:
                    out.append(piece)
                start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return out


def _looks_like_heading(line: str) -> bool:
    """Section titles and list items in wiki text ("Personality", "背景") are not facts."""
    line = line.strip()
    if not line or line.startswith("#"):
        return True
    if line.endswith(_TERMINAL) or ":" in line or "：" in line:
        return False
    return len(_CJK.findall(line)) + len(line.split()) < 10


def extract_statements(passages: list[str]) -> list[Statement]:
    """Naive fact extraction: one statement per sentence (an LLM-based extractor will replace it)."""
    seen: set[str] = set()
    out: list[Statement] = []
    for passage in passages:
        for sentence in split_sentences(passage):
            sentence = sentence.lstrip("-*• ").strip()
            if _looks_like_heading(sentence) or sentence in seen:
                continue
            seen.add(sentence)
            out.append(Statement(sentence, source="extracted"))
    return out


# ---------------------------------------------------------------------------------------------
# rolecraft's own JSON


def character_to_dict(c: Character) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": c.name,
        "language": c.language,
        "greeting": c.greeting,
        "examples": list(c.examples),
        "passages": list(c.passages),
        "statements": [{"text": s.text, "keys": list(s.keys), "source": s.source} for s in c.statements],
        "meta": c.meta,
    }


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _statement_from(item: Any, where: str, index: int) -> Statement:
    if isinstance(item, str) and item.strip():
        return Statement(item.strip())
    if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip():
        keys, source = item.get("keys", []), item.get("source", "persona")
        if _is_str_list(keys) and isinstance(source, str):
            return Statement(item["text"].strip(), list(keys), source)
    raise RolecraftError(f"{where} has a malformed statement at position {index + 1} (expected text or "
                         "{text, keys, source}).")


def character_from_dict(d: dict[str, Any], source: str = "character data") -> Character:
    """Inverse of `character_to_dict`; `source` names the input in error messages."""
    if not isinstance(d, dict):
        raise RolecraftError(f"{source} is not a JSON object, so it cannot be a rolecraft character.")
    fmt = d.get("format", FORMAT)
    if fmt != FORMAT:
        raise RolecraftError(f"{source} has format '{fmt}', but this rolecraft only reads '{FORMAT}'.")
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RolecraftError(f"{source} is a rolecraft character without a name.")
    statements = d.get("statements", [])
    if not isinstance(statements, list):
        raise RolecraftError(f"{source} has a 'statements' field that is not a list.")
    for key in ("passages", "examples"):
        if not _is_str_list(d.get(key, [])):
            raise RolecraftError(f"{source} has a '{key}' field that is not a list of text.")
    for key in ("greeting", "language"):
        if not isinstance(d.get(key, ""), str):
            raise RolecraftError(f"{source} has a '{key}' field that is not text.")
    if not isinstance(d.get("meta", {}), dict):
        raise RolecraftError(f"{source} has a 'meta' field that is not a JSON object.")
    passages = list(d.get("passages", []))
    greeting = d.get("greeting", "")
    return Character(
        name=name.strip(),
        statements=[_statement_from(item, source, i) for i, item in enumerate(statements)],
        passages=passages,
        greeting=greeting,
        examples=list(d.get("examples", [])),
        language=d.get("language") or detect_language(" ".join([name, greeting, *passages])),
        meta=dict(d.get("meta", {})),
    )


# ---------------------------------------------------------------------------------------------
# Loading


def _name_from_file(path: Path) -> str:
    """wiki_Komeiji Koishi.txt -> "Komeiji Koishi"; mira_holloway.json -> "mira holloway"."""
    stem = path.stem
    if stem.lower().startswith("wiki_"):
        stem = stem[5:]
    return stem.replace("_", " ").strip()


def _label(path: Path) -> str:
    """How errors name a file: its name, plus the folder for the ubiquitous character.json."""
    return f"{path.parent.name}/{path.name}" if path.name == "character.json" else path.name


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RolecraftError(f"Could not read {_label(path)}: {exc.strerror or exc}.") from exc
    if not data.strip():
        raise RolecraftError(f"{_label(path)} is empty.")
    return data


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    if b"\x00" in data[:8192]:
        raise RolecraftError(f"{_label(path)} looks like a binary file, not UTF-8 text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RolecraftError(f"{_label(path)} is not UTF-8 text (invalid byte at offset {exc.start}).") from exc
    if not text.strip():
        raise RolecraftError(f"{_label(path)} is empty.")
    return text


def parse_wiki_text(text: str, source: str, name: str | None = None, default_name: str | None = None) -> Character:
    """Profile text: paragraphs split by blank lines, an optional first line '# Full Name'.

    The name is `name`, else the '# Full Name' title, else `default_name` (usually from the file name).
    """
    lines = text.strip().splitlines()
    title = None
    if lines and re.match(r"#\s+\S", lines[0]):
        title = lines.pop(0).lstrip("#").strip()
    passages = []
    for para in split_paragraphs("\n".join(lines)):
        kept = [ln.strip() for ln in para.splitlines() if not ln.strip().startswith("#")]
        if kept and not all(_looks_like_heading(ln) for ln in kept):
            passages.append("\n".join(kept))
    statements = extract_statements(passages)
    if not statements:
        raise RolecraftError(f"{source} holds no profile sentences to build a character from.")
    final_name = name or title or default_name
    if not final_name:
        raise RolecraftError(f"{source} gives no character name; pass one explicitly.")
    return Character(
        name=final_name,
        statements=statements,
        passages=passages,
        language=detect_language(text),
        meta={"source_format": "wiki-text", "imported_from": source},
    )


def _from_statement_list(items: list[Any], source: str, name: str | None, default_name: str | None) -> Character:
    if not items:
        raise RolecraftError(f"{source} holds an empty list, so there are no statements to import.")
    if isinstance(items[0], str):
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                raise RolecraftError(f"{source} is a statements list, but item {i + 1} is not a non-empty "
                                     "string.")
        name = name or default_name
        if not name:
            raise RolecraftError(f"{source} is a statements list without a character name; pass one.")
        texts = [t.strip() for t in items]
        return Character(
            name=name,
            statements=[Statement(t) for t in texts],
            language=detect_language(" ".join(texts)),
            meta={"source_format": "statements", "imported_from": source},
        )
    if isinstance(items[0], dict):
        return _from_apc_rows(items, source, name, default_name)
    raise RolecraftError(f"{source} is a list of neither statements (text) nor {{character, statement}} "
                         "objects.")


def _from_apc_rows(rows: list[Any], source: str, name: str | None, default_name: str | None) -> Character:
    """APC format: [{character, statement, passage?}, ...], one character per file."""
    for i, row in enumerate(rows):
        ok = isinstance(row, dict) and isinstance(row.get("statement"), str) and row["statement"].strip()
        if not ok or not isinstance(row.get("character", ""), str):
            raise RolecraftError(f"{source} has a malformed row {i + 1} (expected {{character, statement}} "
                                 "with text values).")
    names = list(dict.fromkeys(r["character"].strip() for r in rows if r.get("character", "").strip()))
    if len(names) > 1:
        if name not in names:
            raise RolecraftError(f"{source} holds statements for several characters ({', '.join(names)}); "
                                 "pass the one to import as the name.")
        rows = [r for r in rows if r.get("character", "").strip() == name]
    final_name = name or (names[0] if names else default_name)
    if not final_name:
        raise RolecraftError(f"{source} names no character; pass the name explicitly.")
    texts = list(dict.fromkeys(r["statement"].strip() for r in rows))
    passages = list(dict.fromkeys(r["passage"].strip() for r in rows
                                  if isinstance(r.get("passage"), str) and r["passage"].strip()))
    return Character(
        name=final_name,
        statements=[Statement(t) for t in texts],
        passages=passages,
        language=detect_language(" ".join(texts)),
        meta={"source_format": "apc-statements", "imported_from": source},
    )


def character_from_data(
    data: Any, source: str = "character data", name: str | None = None, default_name: str | None = None
) -> Character:
    """Any parsed JSON rolecraft understands: own format, Character Card V1/V2/V3, statement lists.

    `name` overrides whatever the data says; `default_name` is used only when the data names nobody.
    """
    from . import cards  # cards.py imports this module, so import it late

    if isinstance(data, list):
        character = _from_statement_list(data, source, name, default_name)
    elif isinstance(data, dict) and ("format" in data or "statements" in data):
        character = character_from_dict(data, source)
    elif isinstance(data, dict) and ("spec" in data or "name" in data):
        character = cards.card_to_character(data, source)
    else:
        kind = "JSON object" if isinstance(data, dict) else f"JSON {type(data).__name__}"
        raise RolecraftError(f"{source} holds a {kind} that is neither a rolecraft character, a character "
                             "card, nor a list of statements.")
    if name:
        character.name = name
    return character


def _load_folder(path: Path, name: str | None) -> Character:
    file = path / "character.json"
    if not file.is_file():
        raise RolecraftError(f"{path} is a folder without a character.json, so it is not a character folder.")
    character = _load_json(file, name)
    image = character.meta.get("image_path")
    if isinstance(image, str) and image and not Path(image).is_absolute():
        character.meta["image_path"] = str((path / image).resolve())  # stored relative to the folder
    return character


def _load_json(path: Path, name: str | None) -> Character:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RolecraftError(f"{_label(path)} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                             f"{exc.colno}).") from exc
    return character_from_data(data, _label(path), name, default_name=_name_from_file(path) or None)


def _load_png(path: Path, name: str | None) -> Character:
    from . import cards

    card = cards.read_png_card(_read_bytes(path), _label(path))
    character = cards.card_to_character(card, _label(path))
    character.meta["image_path"] = str(path.resolve())  # lets an export keep the original picture
    if name:
        character.name = name
    return character


def load_character(path: str | Path, name: str | None = None) -> Character:
    """Load a character from a wiki .txt, a .json (own, card or statements), a card .png or a folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise RolecraftError(f"{path} does not exist.")
    if path.is_dir():
        return _load_folder(path, name)
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        return parse_wiki_text(_read_text(path), path.name, name, _name_from_file(path) or None)
    if suffix == ".json":
        return _load_json(path, name)
    if suffix == ".png":
        return _load_png(path, name)
    raise RolecraftError(f"{path.name} has an unsupported file type '{path.suffix or '(none)'}' "
                         "(use .txt, .json or .png).")


# ---------------------------------------------------------------------------------------------
# Saving and exporting


def save_character(c: Character, path: str | Path) -> Path:
    path = Path(path)
    atomic_write_json(path, character_to_dict(c))
    return path


def _image_bytes(c: Character, image: bytes | str | Path | None) -> bytes | None:
    if isinstance(image, bytes):
        return image
    candidate = Path(image) if image is not None else None
    stored = c.meta.get("image_path")
    if candidate is None and isinstance(stored, str) and stored and Path(stored).is_file():
        candidate = Path(stored)
    if candidate is None:
        return None
    return _read_bytes(candidate)


def export_character(c: Character, fmt: str, path: str | Path, image: bytes | str | Path | None = None) -> Path:
    """Write `c` as one of EXPORT_FORMATS; PNG cards reuse `image`, the imported picture, or a placeholder."""
    from . import cards

    path = Path(path)
    if fmt not in EXPORT_FORMATS:
        raise RolecraftError(f"Unknown export format '{fmt}'; choose one of {', '.join(EXPORT_FORMATS)}.")
    if fmt == "rolecraft":
        return save_character(c, path)
    if fmt == "statements":
        atomic_write_json(path, [{"character": c.name, "statement": s.text} for s in c.statements])
    elif fmt.endswith("-json"):
        atomic_write_json(path, cards.character_to_card(c, 3 if fmt == "card-v3-json" else 2))
    else:
        v2 = cards.character_to_card(c, 2)
        v3 = cards.character_to_card(c, 3) if fmt == "card-v3-png" else None
        png = _image_bytes(c, image)
        label = Path(image).name if isinstance(image, str | Path) else "the character's image"
        atomic_write_bytes(path, cards.embed_cards(png, chara=v2, ccv3=v3, source=label, seed=c.name))
    return path
