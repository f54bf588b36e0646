"""Conversations kept by the server in SQLite: each session's turns, running summary and scores.

WAL journal with synchronous=FULL: a turn is committed (and on disk) before the reply that
acknowledges it is sent, and it survives the process being killed. One connection, guarded by a lock,
is shared by the server's worker threads; each call is one short transaction.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agent import Memory, Turn
from ..errors import RolecraftError

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    character TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    summary TEXT NOT NULL DEFAULT '',
    summaries INTEGER NOT NULL DEFAULT 0,
    recent_from INTEGER NOT NULL DEFAULT 0  -- turns before this index live only in the summary
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    user TEXT NOT NULL,
    reply TEXT NOT NULL,
    statements TEXT NOT NULL,  -- JSON list: the persona statements the reply was given
    created REAL NOT NULL,
    faithfulness TEXT,  -- JSON APC report, once computed
    PRIMARY KEY (session_id, idx)
);
CREATE INDEX IF NOT EXISTS sessions_by_character ON sessions(character, updated);
"""


def valid_session_id(value: str) -> bool:
    return bool(SESSION_ID.fullmatch(value))


@dataclass
class StoredSession:
    id: str
    character: str
    memory: Memory


class SessionStore:
    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RolecraftError(f"Cannot open the session database {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.fetchall()

    # -- the conversation memory ----------------------------------------------------------------
    def load(self, session_id: str) -> StoredSession | None:
        with self._lock:
            head = self._db.execute(
                "SELECT character, summary, summaries, recent_from FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if head is None:
                return None
            rows = self._db.execute(
                "SELECT user, reply, statements FROM turns WHERE session_id = ? ORDER BY idx", (session_id,)
            ).fetchall()
        character, summary, summaries, recent_from = head
        log = [Turn(user, reply, json.loads(statements)) for user, reply, statements in rows]
        memory = Memory(summary=summary, recent=log[recent_from:], log=log, summaries=summaries)
        return StoredSession(session_id, character, memory)

    def save(self, session_id: str, character: str, memory: Memory) -> int:
        """Store the turns not yet stored and the summary state, in one transaction; the last turn's index."""
        now = time.time()
        recent_from = len(memory.log) - len(memory.recent)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO sessions (id, character, created, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(id) DO NOTHING",
                    (session_id, character, now, now),
                )
                stored = db.execute("SELECT COUNT(*) FROM turns WHERE session_id = ?", (session_id,)).fetchone()[0]
                db.executemany(
                    "INSERT INTO turns (session_id, idx, user, reply, statements, created) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (session_id, i, t.user, t.reply, json.dumps(t.statements, ensure_ascii=False), now)
                        for i, t in enumerate(memory.log[stored:], start=stored)
                    ],
                )
                db.execute(
                    "UPDATE sessions SET updated = ?, summary = ?, summaries = ?, recent_from = ? WHERE id = ?",
                    (now, memory.summary, memory.summaries, recent_from, session_id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(memory.log) - 1

    # -- reading and managing -------------------------------------------------------------------
    def list(self, character: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        where, args = ("WHERE s.character = ?", (character,)) if character else ("", ())
        rows = self._query(
            "SELECT s.id, s.character, s.created, s.updated, "
            "(SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id), "
            "(SELECT user FROM turns t WHERE t.session_id = s.id ORDER BY idx LIMIT 1) "
            f"FROM sessions s {where} ORDER BY s.updated DESC LIMIT ?",
            (*args, limit),
        )
        return [
            {
                "id": sid,
                "object": "session",
                "character": char,
                "created": created,
                "updated": updated,
                "turns": turns,
                "title": (first or "")[:80],
            }
            for sid, char, created, updated, turns, first in rows
        ]

    def get(self, session_id: str) -> dict[str, Any] | None:
        head = self._query(
            "SELECT character, created, updated, summary, summaries, recent_from FROM sessions WHERE id = ?",
            (session_id,),
        )
        if not head:
            return None
        character, created, updated, summary, summaries, recent_from = head[0]
        turns = self._query(
            "SELECT idx, user, reply, statements, created, faithfulness FROM turns WHERE session_id = ? ORDER BY idx",
            (session_id,),
        )
        return {
            "id": session_id,
            "object": "session",
            "character": character,
            "created": created,
            "updated": updated,
            "summary": summary,
            "summaries": summaries,
            "recent_from": recent_from,
            "turns": [
                {
                    "index": idx,
                    "user": user,
                    "reply": reply,
                    "statements": json.loads(statements),
                    "created": t_created,
                    "faithfulness": json.loads(faith) if faith else None,
                }
                for idx, user, reply, statements, t_created, faith in turns
            ],
        }

    def turn(self, session_id: str, index: int) -> tuple[str, str, str] | None:
        """(character, user message, reply) of one stored turn."""
        rows = self._query(
            "SELECT s.character, t.user, t.reply FROM turns t JOIN sessions s ON s.id = t.session_id "
            "WHERE t.session_id = ? AND t.idx = ?",
            (session_id, index),
        )
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def set_faithfulness(self, session_id: str, index: int, report: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE turns SET faithfulness = ? WHERE session_id = ? AND idx = ?",
                (json.dumps(report, ensure_ascii=False), session_id, index),
            )

    def delete(self, session_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return cur.rowcount > 0
