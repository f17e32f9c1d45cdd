"""Bulk mode. Qdrant Edge for real; the server path with a small fake client that records calls
(no Qdrant server can be installed on these machines), where the point is the logic around
it: read first, record before changing, restore exactly, survive a crash."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tasks import edge_store
from tasks.bulk import enter_bulk_mode, exit_bulk_mode, load_bulk_state, recover_bulk_mode
from tasks.edge_store import EdgeStore
from tasks.server_store import ServerStore
from tests.unit.test_stores import chunk


class FakeServerClient:
    """Just enough of QdrantClient: a collection config that update_collection changes."""

    def __init__(self, m=32, threshold=50_000):
        self.hnsw_m, self.threshold = m, threshold
        self.calls = []

    def get_collection(self, name):
        return SimpleNamespace(
            config=SimpleNamespace(
                hnsw_config=SimpleNamespace(m=self.hnsw_m), optimizer_config=SimpleNamespace(indexing_threshold=self.threshold)
            )
        )

    def update_collection(self, name, hnsw_config=None, optimizers_config=None):
        self.calls.append((hnsw_config.m, optimizers_config.indexing_threshold))
        self.hnsw_m, self.threshold = hnsw_config.m, optimizers_config.indexing_threshold
        return True


def test_server_bulk_mode_pauses_then_restores_what_was_read(tmp_path):
    client = FakeServerClient(m=32, threshold=50_000)  # not Qdrant's defaults: proves nothing is hard-coded
    store = ServerStore(client, "c", "http://qdrant:6333")
    state_path = tmp_path / "bulk-mode.json"
    state = enter_bulk_mode(store, state_path)
    assert (client.hnsw_m, client.threshold) == (0, 0)
    assert load_bulk_state(state_path) == state and state.paused == {"hnsw_m": 32, "indexing_threshold": 50_000}
    exit_bulk_mode(store, state, state_path)
    assert (client.hnsw_m, client.threshold) == (32, 50_000)
    assert not state_path.exists()
    exit_bulk_mode(store, state, state_path)  # a retried exit is harmless
    assert (client.hnsw_m, client.threshold) == (32, 50_000)


def test_the_record_is_written_before_the_server_changes(tmp_path):
    client = FakeServerClient(m=24, threshold=10_000)
    state_path = tmp_path / "bulk-mode.json"

    def dies_when_updating(*args, **kwargs):
        raise ConnectionError("killed while updating")

    client.update_collection = dies_when_updating
    with pytest.raises(ConnectionError):
        enter_bulk_mode(ServerStore(client, "c", "http://qdrant:6333"), state_path)
    assert load_bulk_state(state_path).paused == {"hnsw_m": 24, "indexing_threshold": 10_000}


def test_a_run_that_died_in_bulk_mode_is_restored_by_the_next(tmp_path):
    client = FakeServerClient(m=24, threshold=10_000)
    store = ServerStore(client, "c", "http://qdrant:6333")
    state_path = tmp_path / "bulk-mode.json"
    enter_bulk_mode(store, state_path)  # ... and the process dies here
    # A second enter must not record the paused values as the originals.
    second = enter_bulk_mode(store, state_path)
    assert second.paused == {"hnsw_m": 24, "indexing_threshold": 10_000}
    assert recover_bulk_mode(store, state_path) is True
    assert (client.hnsw_m, client.threshold) == (24, 10_000) and not state_path.exists()
    assert recover_bulk_mode(store, state_path) is False


def test_exit_failure_keeps_the_record_for_the_next_run(tmp_path):
    client = FakeServerClient()
    store = ServerStore(client, "c", "http://qdrant:6333")
    state_path = tmp_path / "bulk-mode.json"
    state = enter_bulk_mode(store, state_path)
    client.update_collection = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("server gone"))
    with pytest.raises(ConnectionError):
        exit_bulk_mode(store, state, state_path)
    assert load_bulk_state(state_path) == state


@pytest.fixture()
def small_segments(monkeypatch):
    """Segments sealed at 100 points of 8 dimensions; 64 points (2 KB) already earn a graph."""
    monkeypatch.setattr(edge_store, "SEGMENT_KB", 2)
    monkeypatch.setattr(edge_store, "REOPEN_POINTS", 100)


def load(store: EdgeStore, count: int) -> None:
    rng = np.random.default_rng(0)
    chunks = [chunk(f"src/f{i}.rs", f"item_{i}", f"fn item_{i}() {{}}") for i in range(count)]
    vectors = rng.normal(size=(count, 8)).astype(np.float32)
    store.upsert(chunks, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def segments(store: EdgeStore) -> dict[str, str]:
    """Each segment's id and index type (plain or hnsw)."""
    found = {}
    for path in (store.path / "segments").glob("*/segment.json"):
        found[path.parent.name] = json.loads(path.read_text())["config"]["vector_data"][""]["index"]["type"]
    return found


def test_edge_bulk_load_seals_full_segments_once_and_builds_the_rest_at_the_end(tmp_path, small_segments):
    store = EdgeStore.open(tmp_path / "edge", dim=8)
    state_path = tmp_path / "bulk-mode.json"
    state = enter_bulk_mode(store, state_path)
    assert load_bulk_state(state_path) == state and state.location == "embedded"
    load(store, 280)
    during = segments(store)
    sealed = {s for s, kind in during.items() if kind == "hnsw"}
    assert len(sealed) == 2 and store.graphs_built() == 2  # the open segment (80 points) has none
    exit_bulk_mode(store, state, state_path)
    after = segments(store)
    assert sealed <= set(after) and store.graphs_built() == 3  # sealed ones kept as they were: no rebuild
    assert not state_path.exists() and store.count() == 280
    hits = store.search(np.ones(8, dtype=np.float32) / np.sqrt(8), limit=10)
    assert len(hits) == 10 and hits == sorted(hits, key=lambda h: -h.score)
    store.close()


def test_edge_bulk_mode_left_by_a_dead_run_is_ended_by_the_next(tmp_path, small_segments):
    store = EdgeStore.open(tmp_path / "edge", dim=8)
    enter_bulk_mode(store, tmp_path / "bulk-mode.json")
    load(store, 180)
    store.commit()
    store.close()  # the run dies here: the record stays, the last 80 points have no graph
    again = EdgeStore.open(tmp_path / "edge")
    try:
        assert again.graphs_built() == 1
        assert recover_bulk_mode(again, tmp_path / "bulk-mode.json") is True
        assert again.graphs_built() == 2 and again.count() == 180
    finally:
        again.close()
