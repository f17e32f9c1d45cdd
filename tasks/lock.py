"""One indexing run per code base at a time, whatever started it (CLI, schedule, UI).

An exclusive flock on <data_dir>/index.lock, held for the whole run. The kernel drops it
when the holder exits, even by a crash, so a lock is never stale: the next run takes it at
once. The holder writes who it is into the file (pid, host, flow run, since), so a run that
has to wait can say whom it waits for, and empties it when it ends. A run that finds the file
still holding someone when it takes the lock knows that run died without finishing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator


class CodebaseBusy(RuntimeError):
    """Another run holds the code base for longer than this run was willing to wait."""


def _read(lock_path: Path) -> dict:
    try:
        info = json.loads(Path(lock_path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def describe(info: dict) -> str:
    if not info:
        return "another run"
    return f"{info.get('label', 'a run')} (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


def holder_of(lock_path: Path) -> str:
    return describe(_read(lock_path))


def run_in_progress(lock_path: Path) -> str | None:
    """Who is indexing this code base now (from the lock's holder), or None when nobody is."""
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return None
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder_of(lock_path)
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def codebase_lock(
    lock_path: Path,
    wait_seconds: float,
    label: str,
    on_wait: Callable[[str], None] | None = None,
    on_takeover: Callable[[dict], None] | None = None,
    flow_run_id: str | None = None,
) -> Iterator[None]:
    """Held for the block. `on_wait(holder)` once if another run has it; `on_takeover(info)`
    when the run that held it last died without finishing (`info`: what it wrote)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = holder_of(lock_path)
                if not waiting and on_wait is not None:
                    on_wait(holder)
                waiting = True
                if time.monotonic() >= deadline:
                    raise CodebaseBusy(
                        f"{holder} is indexing this code base; waited {wait_seconds:.0f} s "
                        "(RCI_LOCK_WAIT_SECONDS), try again when it has finished"
                    ) from None
                time.sleep(0.25)
        previous = _read(lock_path)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "label": label,
            "flow_run_id": flow_run_id,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if previous and on_takeover is not None:
            on_takeover(previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
