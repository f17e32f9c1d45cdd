"""The vector store on a real Qdrant server (RCI_QDRANT_URL), when this machine has one to start:
the `qdrant` binary on PATH, or RCI_TEST_QDRANT_BIN. None of the package registries these
machines reach ships it (README, Limits), so here the test skips and the recording fake in
tests/unit/test_bulk.py covers the server path's calls."""

import json
import os
import shutil
import subprocess
import time

import httpx
import pytest

from flows.temporary_server import free_port, stop_process
from tasks.settings import CodebaseLayout, load_settings
from tests.conftest import rci

pytestmark = [pytest.mark.integration]

QDRANT = os.environ.get("RCI_TEST_QDRANT_BIN") or shutil.which("qdrant")


@pytest.fixture()
def qdrant_server(tmp_path):
    if not QDRANT:
        pytest.skip("no Qdrant server binary here (qdrant on PATH or RCI_TEST_QDRANT_BIN); no reachable registry ships one")
    http, grpc = free_port(), free_port()
    env = {**os.environ, "QDRANT__SERVICE__HTTP_PORT": str(http), "QDRANT__SERVICE__GRPC_PORT": str(grpc),
           "QDRANT__STORAGE__STORAGE_PATH": str(tmp_path / "qdrant"), "QDRANT__TELEMETRY_DISABLED": "true"}  # fmt: skip
    log = open(tmp_path / "qdrant.log", "w")
    process = subprocess.Popen([QDRANT], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "qdrant.log").read_text()[-2000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield url
    stop_process(process, timeout=15)
    log.close()


def test_index_search_and_deletes_through_a_qdrant_server(qdrant_server, demo_crate, data_dir):
    from qdrant_client import QdrantClient

    env = {"RCI_QDRANT_URL": qdrant_server}
    done = rci("index", str(demo_crate), env=env)
    assert done.returncode == 0, done.stderr
    layout = CodebaseLayout.for_root(demo_crate, load_settings())
    client = QdrantClient(url=qdrant_server)

    def points() -> dict:
        found, offset = {}, None
        while True:
            batch, offset = client.scroll(layout.collection, limit=256, offset=offset, with_payload=True)
            found.update({str(p.id): p.payload for p in batch})
            if offset is None:
                return found

    before = points()
    assert {p["path"] for p in before.values()} >= {"src/net.rs", "src/lib.rs"}
    info = client.get_collection(layout.collection)
    assert set(info.payload_schema) == {"path", "kind"}
    assert info.config.hnsw_config.m > 0 and info.config.optimizer_config.indexing_threshold > 0  # bulk mode ended

    hits = json.loads(rci("search", str(demo_crate), "send a file again after a failure, waiting longer each time",
                          "--engine", "vector", "--path", "src/*.rs", "--json", env=env).stdout)  # fmt: skip
    assert hits and all(h["file"].startswith("src/") for h in hits)
    assert "retry_failed_upload" in {h["symbol"].split("::")[-1] for h in hits[:3]}

    (demo_crate / "src" / "net.rs").unlink()
    assert rci("index", str(demo_crate), env=env).returncode == 0
    after = points()
    assert after and "src/net.rs" not in {p["path"] for p in after.values()}
    assert set(after) == {i for i, p in before.items() if p["path"] != "src/net.rs"}
