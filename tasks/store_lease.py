"""Turns at a code base's embedded vector store: one process has it open at a time.

Qdrant Edge lets one process open a shard (a second one fails: "Can't init WAL: WouldBlock",
and without the WAL a concurrent load corrupted the writer's payload storage). So processes
take turns, through two files in the code base's data folder, each held with an exclusive
flock that the kernel drops when its holder exits, however it exits:

    vectors.lock   held by the process that has the shard open
    vectors.want   held by a process waiting for the shard, or using it for a while

An index run holds both for the whole run. A one-off reader (a search, `rci status`) holds
both for its query. A long-lived reader (a warm Searcher, the MCP server) keeps only
vectors.lock between queries and watches vectors.want: when someone else holds it, it closes
the shard and lets go (within WATCH_SECONDS), then takes its turn again on its next query,
when nobody wants the store, opening what the other process left.

Each file holds who has it (role, pid, host, since), so a waiting process can say whom it
waits for, and a reader can tell an index run (minutes: answer from BM25) from another
reader (a moment: wait for it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

WATCH_SECONDS = 0.1  # how often a long-lived holder looks for someone waiting
POLL_SECONDS = 0.02
INDEX_RUN = "index run"


class StoreBusy(RuntimeError):
    """Another process has the store for longer than this one was willing to wait."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class _LockFile:
    """One flock file: taken without blocking, its holder written inside."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def try_take(self, info: dict) -> bool:
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # drops the flock

    def is_free(self) -> bool:
        """Nobody holds it (checked by taking it for a moment)."""
        if self.fd is not None:
            return True
        if not self.path.exists():
            return True
        fd = os.open(self.path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}


def describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return f"{holder.get('role', 'a process')} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"


class StoreLease:
    def __init__(self, data_dir: Path, role: str):
        data_dir = Path(data_dir)
        self.role = role
        self._store = _LockFile(data_dir / "vectors.lock")
        self._want = _LockFile(data_dir / "vectors.want")

    def _info(self) -> dict:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return {"role": self.role, "pid": os.getpid(), "host": socket.gethostname(), "since": since}

    @property
    def held(self) -> bool:
        return self._store.fd is not None

    def take(self, wait_seconds: float, give_up: Callable[[dict], bool] = lambda holder: False) -> None:
        """Queue for the store (vectors.want), then take it (vectors.lock). `give_up(holder)`
        ends the wait at once (a reader does not wait for an index run); StoreBusy either way."""
        deadline = time.monotonic() + wait_seconds
        info = self._info()
        for lock in (self._want, self._store):
            while not lock.try_take(info):
                holder = lock.holder()
                if give_up(holder) or time.monotonic() >= deadline:
                    self.release()
                    raise StoreBusy(
                        f"the vector store is in use by {describe(holder)}; waited {wait_seconds:.0f} s", holder
                    )
                time.sleep(POLL_SECONDS)

    def take_unless_indexing(self, wait_seconds: float) -> None:
        """A reader's turn: wait for other readers, not for an index run."""
        from tasks.vector_store import VectorsUnavailable

        try:
            self.take(wait_seconds, give_up=lambda holder: holder.get("role") == INDEX_RUN)
        except StoreBusy as busy:
            if busy.holder.get("role") == INDEX_RUN:
                raise VectorsUnavailable(
                    "an index run is writing this code base's vectors; these results are BM25 only, "
                    "vector results return when the run ends"
                ) from None
            raise VectorsUnavailable(f"{busy}; these results are BM25 only") from None

    def keep(self) -> None:
        """A long-lived holder keeps the store but leaves the queue free for others."""
        self._want.release()

    def someone_waiting(self) -> bool:
        """Another process holds vectors.want: a long-lived holder should let go now."""
        return self._want.fd is None and not self._want.is_free()

    def release(self) -> None:
        self._store.release()
        self._want.release()


class Watcher:
    """A long-lived holder's thread: calls `let_go` when another process waits for the store."""

    def __init__(self, lease: StoreLease, let_go: Callable[[], None]):
        self._lease = lease
        self._let_go = let_go
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rci-store-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            if self._lease.held and self._lease.someone_waiting():
                self._let_go()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
