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
from typing import Iterable, Iterator, Sequence

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

    def known(self, keys: Sequence[bytes]) -> np.ndarray:
        """Which keys have a vector here (one bool per key); they count as used by this run."""
        unique = list(dict.fromkeys(keys))
        present: set[bytes] = set()
        with self._lock:
            present.update(key for (key,) in self._rows("key", unique))
            self._used += b"".join(present)
        return np.fromiter((key in present for key in keys), dtype=bool, count=len(keys))

    def read_into(self, keys: Sequence[bytes], out: np.ndarray) -> np.ndarray:
        """Copy each key's vector into its row of `out` (float32, one row per key); returns
        which rows were found. Reading does not count as use: known() and put_many() do."""
        rows_of: dict[bytes, list[int]] = {}
        for row, key in enumerate(keys):
            rows_of.setdefault(key, []).append(row)
        found = np.zeros(len(keys), dtype=bool)
        unique = list(rows_of)
        with self._lock:
            for key, blob in self._rows("key, vector", unique):
                rows = rows_of[key]
                out[rows] = np.frombuffer(blob, dtype=np.float32)
                found[rows] = True
        return found

    def _rows(self, columns: str, keys: list[bytes]) -> Iterator[tuple]:
        """`columns` of the rows with these keys, asked for in chunks (with the lock held)."""
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            part = keys[start : start + _LOOKUP_CHUNK]
            yield from self._db.execute(f"SELECT {columns} FROM vectors WHERE key IN ({','.join('?' * len(part))})", part)

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
