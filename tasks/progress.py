"""Progress events from the indexing stages to whoever shows them (the CLI's progress bar).

Stages call the module functions; by default nothing listens. The CLI installs a sink for
the duration of a run. Flow parameters must be serialisable, so the sink is not one.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Protocol


class ProgressSink(Protocol):
    def files_planned(self, count: int) -> None: ...
    def chunks_planned(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...
    def files_done(self, count: int) -> None: ...
    def stage(self, name: str) -> None: ...


class Silent:
    def files_planned(self, count: int) -> None: ...
    def chunks_planned(self, count: int) -> None: ...
    def chunks_embedded(self, count: int) -> None: ...
    def files_done(self, count: int) -> None: ...
    def stage(self, name: str) -> None: ...


_lock = threading.Lock()
_sink: ProgressSink = Silent()


@contextlib.contextmanager
def reporting_to(sink: ProgressSink) -> Iterator[None]:
    global _sink
    with _lock:
        previous, _sink = _sink, sink
    try:
        yield
    finally:
        with _lock:
            _sink = previous


def files_planned(count: int) -> None:
    _sink.files_planned(count)


def chunks_planned(count: int) -> None:
    _sink.chunks_planned(count)


def chunks_embedded(count: int) -> None:
    _sink.chunks_embedded(count)


def files_done(count: int) -> None:
    _sink.files_done(count)


def stage(name: str) -> None:
    _sink.stage(name)
