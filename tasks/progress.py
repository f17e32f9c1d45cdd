"""Progress events from the indexing stages to whoever shows them.

Stages call the module functions; by default nothing listens. The CLI installs a sink for
the duration of a run (its progress bar); every run also keeps `<data dir>/run.json` up to
date (RunFile), which `rci status` reads while the run goes on. Flow parameters must be
serialisable, so sinks are not parameters: the sink is a context variable, which Prefect's
task runner copies into the threads that run the flow's tasks, so two runs in one process
(the MCP server's) report each to its own sinks.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Protocol


class ProgressSink(Protocol):
    def files_planned(self, count: int) -> None: ...
    def chunks_planned(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...
    def files_done(self, count: int) -> None: ...
    def stage(self, name: str) -> None: ...
    def note(self, text: str) -> None: ...


class Silent:
    def files_planned(self, count: int) -> None: ...
    def chunks_planned(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...
    def files_done(self, count: int) -> None: ...
    def stage(self, name: str) -> None: ...
    def note(self, text: str) -> None: ...


_sink: contextvars.ContextVar[ProgressSink] = contextvars.ContextVar("rci_progress_sink", default=Silent())


class Both:
    """Events to two sinks."""

    def __init__(self, first: ProgressSink, second: ProgressSink):
        self.sinks = (first, second)

    def files_planned(self, count: int) -> None:
        for sink in self.sinks:
            sink.files_planned(count)

    def chunks_planned(self, count: int) -> None:
        for sink in self.sinks:
            sink.chunks_planned(count)

    def chunks_embedded(self, count: int) -> None:
        for sink in self.sinks:
            sink.chunks_embedded(count)

    def files_done(self, count: int) -> None:
        for sink in self.sinks:
            sink.files_done(count)

    def stage(self, name: str) -> None:
        for sink in self.sinks:
            sink.stage(name)

    def note(self, text: str) -> None:
        for sink in self.sinks:
            sink.note(text)


class RunFile:
    """The run's progress in a JSON file, rewritten at most every `every` seconds (and at each
    stage); removed when the run ends. What `rci status` shows of a run in progress."""

    def __init__(self, path: Path, every: float = 1.0):
        self.path = Path(path)
        self.every = every
        self.lock = threading.Lock()
        self.state = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stage": "discover",
            "files_planned": 0,
            "files_done": 0,
            "chunks_planned": 0,
            "chunks_embedded": 0,
        }
        self._written = 0.0

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < self.every:
            return
        self._written = now
        from tasks.merkle import write_atomic

        state = {**self.state, "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):  # progress must never fail the run it describes
            write_atomic(self.path, json.dumps(state), durable=False)

    def _add(self, key: str, count: int) -> None:
        with self.lock:
            self.state[key] += count
            self._write()

    def files_planned(self, count: int) -> None:
        with self.lock:
            self.state["files_planned"] = count
            self._write(force=True)

    def chunks_planned(self, count: int) -> None:
        self._add("chunks_planned", count)

    def chunks_embedded(self, count: int) -> None:
        self._add("chunks_embedded", count)

    def files_done(self, count: int) -> None:
        with self.lock:  # once per batch: always written, so a frozen or slow run shows where it is
            self.state["files_done"] += count
            self._write(force=True)

    def stage(self, name: str) -> None:
        with self.lock:
            self.state["stage"] = name
            self._write(force=True)

    def note(self, text: str) -> None:
        with self.lock:
            self.state["note"] = text
            self._write(force=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_run_file(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def also_reporting_to(sink: ProgressSink) -> Iterator[None]:
    """Add a sink to the one installed (the CLI's bar, or none) for the duration."""
    with reporting_to(Both(_sink.get(), sink)):
        yield


@contextlib.contextmanager
def reporting_to(sink: ProgressSink) -> Iterator[None]:
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


def files_planned(count: int) -> None:
    _sink.get().files_planned(count)


def chunks_planned(count: int) -> None:
    _sink.get().chunks_planned(count)


def chunks_embedded(count: int) -> None:
    _sink.get().chunks_embedded(count)


def files_done(count: int) -> None:
    _sink.get().files_done(count)


def stage(name: str) -> None:
    _sink.get().stage(name)


def note(text: str) -> None:
    """A line for the person watching the run (the CLI prints it on stderr)."""
    _sink.get().note(text)
