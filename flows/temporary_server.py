"""Prefect's temporary API server for a CLI run without PREFECT_API_URL, started from outside.

Without an API URL, Prefect starts a temporary server in a subprocess, but the class that
does so lives in `prefect.server.api.server`, and importing it loads the whole server
(FastAPI, SQLAlchemy, its models) into the indexing process: +76 MB of peak RSS in every
run, for code that only runs in the other process. This starts the same subprocess (uvicorn
and Prefect's app factory, as Prefect 3.8's SubprocessASGIServer does) and points this
process at it. If it cannot start, Prefect is left to start its own, as before. The server
exits with the run however the run ends, SIGKILL included (it watches its parent).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

STARTUP_SECONDS = 60.0  # a cold start on 2 busy cores took about 7 s


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
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    environment = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        # What Prefect sets for its own temporary server: no UI, ephemeral mode.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    command = [sys.executable, "-m", "flows.temporary_server", str(port)]
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not _wait_until_healthy(server, url):
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
        stop_process(server)


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


def _wait_until_healthy(server: subprocess.Popen, url: str) -> bool:
    import httpx

    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                return False  # exited: port taken, or a broken install
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return True
            time.sleep(0.1)
    return False


def serve(port: int) -> None:
    """The server process: Prefect's app on loopback until the run that started it is gone."""
    import uvicorn

    from tasks.resources import exit_with_parent

    exit_with_parent(interval=0.2)
    uvicorn.run(
        "prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port, log_level="error", lifespan="on"
    )


if __name__ == "__main__":
    serve(int(sys.argv[1]))
