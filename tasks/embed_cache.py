"""Vectors by (model id, sha256 of the embedded text), in SQLite beside the index.

Unchanged text is never embedded twice: not on an incremental run, not when a file is
moved or renamed (the embedded text holds no path), not on a force reindex unless the
user asks to re-embed. Keys include the model id, so two models' vectors never mix.
Entries for text that no longer exists are dropped by the next force reindex.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
KEY_BYTES = 20
_LOOKUP_CHUNK = 900  # SQLite's default limit on host parameters is 999


class EmbeddingCache:
    def __init__(self, path: Path, model_id: str):
        self.path = Path(path)
        self.model_id = model_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the run's threads, behind a lock: writes are short.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()
        # Keys read or written by this run, for prune_unused, end to end: a set of 245k keys
        # took 22 MB, this 5 MB (repeats are dropped when pruning).
        self._used = bytearray()

    def key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.model_id}\x00{text}".encode("utf-8")).digest()[:KEY_BYTES]

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _LOOKUP_CHUNK):
                part = unique[start : start + _LOOKUP_CHUNK]
                rows = self._db.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})", part
                ).fetchall()
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
            self._used += b"".join(found)
        return found

    def put_many(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(key, np.ascontiguousarray(vector, dtype=np.float32).tobytes()) for key, vector in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
            self._used += b"".join(key for key, _ in rows)

    def prune_unused(self) -> int:
        """Drop entries this run neither read nor wrote (after a force reindex: the dead ones)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS used (key BLOB PRIMARY KEY) WITHOUT ROWID")
            self._db.execute("DELETE FROM used")
            used = bytes(self._used)
            self._db.executemany(
                "INSERT OR IGNORE INTO used VALUES (?)", ((used[i : i + KEY_BYTES],) for i in range(0, len(used), KEY_BYTES))
            )
            removed = self._db.execute("DELETE FROM vectors WHERE key NOT IN (SELECT key FROM used)").rowcount
            self._db.execute("COMMIT")
        return removed

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM vectors")
            self._used.clear()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
