"""The local history of results: SQLite in the user's data folder.

It stays on this machine; ``history = false`` in hotkeys.toml turns it off
and ``yomitori history --clear`` empties it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import platform

EXCERPT_CHARS = 200
_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    source TEXT NOT NULL,
    input_excerpt TEXT NOT NULL,
    output TEXT NOT NULL,
    model TEXT NOT NULL,
    timings TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Entry:
    id: int
    ts: float
    action: str
    source: str
    input_excerpt: str
    output: str
    model: str
    timings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_path() -> Path:
    return platform.data_dir() / "history.sqlite3"


class History:
    """Thread-safe: the action thread writes, the tray and IPC threads read."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(_SCHEMA)
        self.path.chmod(0o600)

    def add(self, action: str, source: str, input_text: str, output: str, model: str,
            timings: dict[str, Any] | None = None) -> int:  # fmt: skip
        excerpt = input_text[:EXCERPT_CHARS]
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO history (ts, action, source, input_excerpt, output, model, timings)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), action, source, excerpt, output, model, json.dumps(timings or {})),
            )
            return int(cursor.lastrowid or 0)

    def recent(self, limit: int = 10) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts, action, source, input_excerpt, output, model, timings"
                " FROM history ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Entry(*row[:7], timings=json.loads(row[7])) for row in rows]

    def clear(self) -> int:
        with self._lock, self._db:
            return self._db.execute("DELETE FROM history").rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
