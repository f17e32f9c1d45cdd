"""Shared fixtures: the demo crate, an isolated data root, the real model, a real Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from flows.temporary_server import free_port, send_queued_logs_and_events, stop_process

REPO = Path(__file__).resolve().parent.parent
FIXTURE_CRATE = REPO / "tests" / "fixtures" / "demo_crate"
FAKE_AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


# Prefect reads its settings when first imported: point every test, and every `rci` the tests
# start, at one real Prefect server (started below on first use) with its own home directory.
_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="rci-test-prefect-"))
_PREFECT_PORT = free_port()
PREFECT_ENV = {
    "PREFECT_HOME": str(_PREFECT_HOME),
    "PREFECT_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
}
os.environ.update(PREFECT_ENV)
os.environ.pop("RCI_PROFILE", None)
os.environ.pop("RCI_QDRANT_URL", None)


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server on a free loopback port, SQLite in its own home directory."""
    log = open(_PREFECT_HOME / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(_PREFECT_PORT)],
        env={**os.environ, **PREFECT_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = PREFECT_ENV["PREFECT_API_URL"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Prefect server exited: {(_PREFECT_HOME / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError("Prefect server did not start within 90 s")
    yield url
    send_queued_logs_and_events(timeout=15)
    stop_process(process, timeout=15)
    log.close()
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture()
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty data root for this test only (RCI_DATA_DIR)."""
    path = tmp_path / "rci-data"
    monkeypatch.setenv("RCI_DATA_DIR", str(path))
    return path


def build_demo_crate(target: Path) -> Path:
    """The committed demo crate plus what git cannot carry: ignored files, target/, bad files, links."""
    crate = target / "demo_crate"
    shutil.copytree(FIXTURE_CRATE, crate)
    (crate / ".gitignore").write_text("generated.rs\ngen/*.rs\n!gen/keep.rs\n")
    (crate / "generated.rs").write_text("pub fn ignored_generated_fn() {}\n")
    (crate / "gen" / "other.rs").write_text("pub fn gen_other_ignored() {}\n")
    (crate / "target" / "debug").mkdir(parents=True)
    (crate / "target" / "debug" / "out.rs").write_text("pub fn target_dir_fn() {}\n")
    (crate / "src" / ".ignore").write_text("scratch_notes.rs\n")
    (crate / "src" / "scratch_notes.rs").write_text("pub fn scratch_ignored_fn() {}\n")
    (crate / "src" / "latin1.rs").write_bytes(b"/// Caf\xe9 au lait.\npub fn latin1_fn() {}\n")
    (crate / "src" / "blob.rs").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00binary_blob_fn")
    (crate / ".aws").mkdir()
    (crate / ".aws" / "credentials.rs").write_text("pub fn aws_credentials_fn() {}\n")
    (crate / "src" / "dangling.rs").symlink_to(crate / "src" / "does_not_exist.rs")
    outside = target / "outside.rs"
    outside.write_text("pub fn outside_fn() {}\n")
    (crate / "src" / "outside.rs").symlink_to(outside)
    return crate


@pytest.fixture()
def demo_crate(tmp_path) -> Path:
    return build_demo_crate(tmp_path)


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    """The real packaged model, loaded once."""
    from tasks.session import load_embedder
    from tasks.settings import load_settings

    return load_embedder(load_settings(data_dir=tmp_path_factory.mktemp("models")))


def rci(*args: str, env: dict | None = None, only_env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `rci` command as a user would: with extra `env`, or with exactly `only_env`."""
    command = [str(Path(sys.executable).parent / "rci"), *args]
    environment = only_env if only_env is not None else {**os.environ, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=timeout)
