"""Stopping a run on SIGINT or SIGTERM within seconds, in whatever phase it is.

The signal sets one process-wide flag and raises KeyboardInterrupt in the main thread, so its
with-blocks unwind (the lock, the temporary Prefect server, the stores are closed). The run's
worker threads cannot be interrupted from outside: they look at the flag between units of
work (a file hashed or read, a batch of texts embedded, a block of rows written) and end with
Stopped. Whatever is still running after GRACE_SECONDS is ended with os._exit: the index is
then left as a SIGKILL leaves it, which the next run repairs (tests/integration/test_kills.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

GRACE_SECONDS = 3.5  # the run must be gone within 5 s of the signal
EXIT_INTERRUPTED = 130

_requested = threading.Event()


class Stopped(KeyboardInterrupt):
    """A worker thread saw the stop request (a KeyboardInterrupt, so no task retries it)."""


def requested() -> bool:
    return _requested.is_set()


def check() -> None:
    """Between units of work: end this thread's work now if the run is being stopped."""
    if _requested.is_set():
        raise Stopped


def request_stop() -> None:
    """Set the flag, and end the process GRACE_SECONDS from now if it has not ended by then."""
    if _requested.is_set():
        return
    _requested.set()
    threading.Thread(target=_exit_after_grace, name="rci-stop-deadline", daemon=True).start()


def _exit_after_grace() -> None:
    threading.Event().wait(GRACE_SECONDS)
    with contextlib.suppress(Exception):
        sys.stderr.write("error: interrupted; the index keeps its last committed state, rerun to finish\n")
        sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """`rci index`: SIGINT and SIGTERM stop the run (a KeyboardInterrupt in the main thread)."""

    def stop(signum, frame):
        request_stop()
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def stop_inside_flow_run() -> Iterator[None]:
    """Inside a flow run Prefect's own SIGTERM handler is in place (it reports the run Crashed,
    or Cancelled when its runner asked); it only gets to run after the flow's with-blocks have
    waited for the worker threads. Ours sets the flag first, then hands over to it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prefect_handler = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        request_stop()
        if callable(prefect_handler):
            prefect_handler(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is stop:
            signal.signal(signal.SIGTERM, prefect_handler)
