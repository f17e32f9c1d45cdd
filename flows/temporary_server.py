"""Prefect's API server for a CLI run without PREFECT_API_URL, in a thread of the run's process.

Without an API URL, Prefect starts a temporary server in a subprocess: a second Python with
its own copy of everything both import (about 200 MB resident on top of the run). This
serves the same app (Prefect's `create_app`, ephemeral: no UI, the services an ephemeral
server runs) with uvicorn from a thread of this process instead, and points the process at
it; a cold index of syn peaked at 628 MB instead of 716-764 MB for the two processes. It
dies with the run however the run ends, SIGKILL included, since it is the run. If it cannot
start, Prefect is left to start its own, as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

STARTUP_SECONDS = 60.0  # a cold start on 2 busy cores took about 7 s
STOP_SECONDS = 10.0


@contextlib.contextmanager
def temporary_prefect_server() -> Iterator[str | None]:
    """Yields the API URL in use: the configured one, ours, or None (Prefect starts its own)."""
    import prefect
    import prefect.context
    from prefect.settings import PREFECT_API_URL, get_current_settings

    configured = PREFECT_API_URL.value()  # environment or Prefect profile
    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if configured or refresh is None:
        yield configured
        return
    home = get_current_settings().home  # where the server keeps its database
    try:
        home.mkdir(parents=True, exist_ok=True)  # Prefect makes it without parents, or not at all
    except OSError as error:  # Prefect's own server would only time out
        raise RuntimeError(
            f"cannot create Prefect's home folder {home}; set PREFECT_HOME to a folder you can write, "
            "or PREFECT_API_URL to a Prefect server"
        ) from error
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    try:
        server = _uvicorn_server(port)
    except Exception:  # a broken server install: Prefect's own temporary server takes over
        yield None
        return
    thread = threading.Thread(target=server.run, name="rci-prefect-server", daemon=True)
    thread.start()
    try:
        if not _wait_until_healthy(thread, url):
            yield None  # Prefect's own temporary server takes over
            return
        # Every thread, including Prefect's own log and event workers, reads the global
        # settings context: rebuild it from the environment with the URL in it.
        os.environ["PREFECT_API_URL"] = url
        refresh()
        try:
            yield url
        finally:
            send_queued_logs_and_events()
            os.environ.pop("PREFECT_API_URL", None)
            refresh()
    finally:
        server.should_exit = True
        thread.join(STOP_SECONDS)


def _uvicorn_server(port: int):
    """Prefect's app as its own temporary server builds it (ephemeral: no UI), on loopback.
    log_config=None: uvicorn leaves the process's logging as the CLI set it."""
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app(ephemeral=True, final=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="error", access_log=False,
                            lifespan="on")  # fmt: skip
    return uvicorn.Server(config)


def send_queued_logs_and_events(timeout: float = 10) -> None:
    """Prefect sends run logs and events in batches from worker threads; they must reach the
    server before it stops, or the last batch fails at exit ("Error logging to API")."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # lost logs must not fail the run they describe
            worker.drain_all(timeout=timeout, at_exit=False)


def stop_process(process: subprocess.Popen, timeout: float = 5) -> None:
    """Terminate, and kill what does not exit within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_healthy(thread: threading.Thread, url: str) -> bool:
    import httpx

    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                return False  # stopped: port taken, or a broken install
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return True
            time.sleep(0.1)
    return False
