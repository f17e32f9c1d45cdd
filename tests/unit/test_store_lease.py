"""Processes taking turns at one code base's Qdrant Edge shard (real processes, real flocks, real Edge)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.edge_store import EdgeStore, WarmEdgeReader
from tasks.store_lease import StoreBusy, StoreLease
from tasks.vector_store import VectorsUnavailable
from tests.unit.test_stores import CHUNKS, chunk

REPO = Path(__file__).resolve().parents[2]

# Another process's index run: takes the store (a warm reader must let go), adds one point, ends.
INDEX_RUN = """
import sys, time, numpy as np
from pathlib import Path
from tasks.edge_store import EdgeStore
from tasks.store_lease import StoreLease
from tests.unit.test_stores import chunk
data = Path(sys.argv[1])
lease = StoreLease(data, "index run")
started = time.monotonic()
lease.take(10)
print(f"waited {time.monotonic() - started:.3f}", flush=True)
store = EdgeStore.open(data / "edge", dim=4, lease=lease)
store.upsert([chunk("src/new.rs", "added_by_the_run", "fn added_by_the_run() {}")], np.full((1, 4), 0.5, dtype=np.float32))
store.commit()
if len(sys.argv) > 2:
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
store.close()
"""


def start(script: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=str(REPO), stdout=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture()
def data(tmp_path) -> Path:
    store = EdgeStore.open(tmp_path / "edge", dim=4)
    store.upsert(CHUNKS, np.eye(4, dtype=np.float32))
    store.close()
    return tmp_path


def test_a_warm_reader_lets_go_for_an_index_run_and_reads_what_it_wrote(data):
    reader = WarmEdgeReader(data, data / "edge")
    try:
        query = np.ones(4, dtype=np.float32)  # nearest to the point the run adds
        assert reader.search(query, limit=1)[0].id in {c.id for c in CHUNKS} and reader.holding
        run = start(INDEX_RUN, str(data))
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0
        waited = float(out.split()[1])
        assert waited < 2.0, f"the index run waited {waited} s for the warm reader"
        assert not reader.holding  # it let go while the other process wrote
        added = chunk("src/new.rs", "added_by_the_run", "fn added_by_the_run() {}")
        assert reader.search(query, limit=1)[0].id == added.id  # opened again: sees the new point
        assert reader.opened == 2
    finally:
        reader.close()


def test_a_reader_does_not_wait_for_an_index_run(data):
    run = start(INDEX_RUN, str(data), "30")
    try:
        assert run.stdout.readline().startswith("waited") and run.stdout.readline() == "holding\n"
        started = time.monotonic()
        with pytest.raises(VectorsUnavailable, match="vector results return when the run ends"):
            StoreLease(data, "search").take_unless_indexing(5)
        assert time.monotonic() - started < 1.0
        reader = WarmEdgeReader(data, data / "edge")
        try:
            with pytest.raises(VectorsUnavailable):
                reader.search(np.ones(4, dtype=np.float32), limit=1)
        finally:
            reader.close()
    finally:
        run.kill()
        run.wait()


def test_a_reader_waits_its_turn_behind_another_reader(data):
    first = StoreLease(data, "search")
    first.take(1)
    second = StoreLease(data, "search")
    with pytest.raises(StoreBusy, match=r"in use by search \(pid \d+"):
        second.take(0.3)
    first.release()
    second.take(1)
    assert second.held
    second.release()


def test_a_holder_killed_with_sigkill_blocks_nobody(data):
    holder = start(INDEX_RUN, str(data), "60")
    assert holder.stdout.readline().startswith("waited") and holder.stdout.readline() == "holding\n"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lease = StoreLease(data, "index run")
    lease.take(2)
    store = EdgeStore.open(data / "edge", lease=lease)  # its write-ahead log is replayed
    try:
        assert chunk("src/new.rs", "added_by_the_run", "fn added_by_the_run() {}").id in store.ids()
    finally:
        store.close()
    assert not lease.held
