"""Bulk mode. The embedded store for real; the server path with a small fake client that
records calls (no Qdrant server can be installed on these machines), where the point is
the logic around it: read first, restore exactly, survive a crash."""

from types import SimpleNamespace

import pytest

from tasks.bulk import EMBEDDED_NOTE, enter_bulk_mode, exit_bulk_mode, load_bulk_state, recover_bulk_mode
from tasks.qdrant_store import QdrantStore


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

    def collection_exists(self, name):
        return True


def test_server_bulk_mode_pauses_then_restores_what_was_read(tmp_path):
    client = FakeServerClient(m=32, threshold=50_000)  # not Qdrant's defaults: proves nothing is hard-coded
    store = QdrantStore(client, "c", embedded=False)
    state_path = tmp_path / "bulk-mode.json"
    state = enter_bulk_mode(store, state_path)
    assert (client.hnsw_m, client.threshold) == (0, 0)
    assert state.active and load_bulk_state(state_path) == state
    exit_bulk_mode(store, state, state_path)
    assert (client.hnsw_m, client.threshold) == (32, 50_000)
    assert not state_path.exists()
    exit_bulk_mode(store, state, state_path)  # a retried exit is harmless
    assert (client.hnsw_m, client.threshold) == (32, 50_000)


def test_a_run_that_died_in_bulk_mode_is_restored_by_the_next(tmp_path):
    client = FakeServerClient(m=24, threshold=10_000)
    store = QdrantStore(client, "c", embedded=False)
    state_path = tmp_path / "bulk-mode.json"
    enter_bulk_mode(store, state_path)  # ... and the process dies here
    # A second enter must not record the paused values as the originals.
    second = enter_bulk_mode(store, state_path)
    assert (second.hnsw_m, second.indexing_threshold) == (24, 10_000)
    assert recover_bulk_mode(store, state_path) is True
    assert (client.hnsw_m, client.threshold) == (24, 10_000) and not state_path.exists()
    assert recover_bulk_mode(store, state_path) is False


def test_embedded_store_says_so_and_changes_nothing(tmp_path):
    store = QdrantStore.open(tmp_path / "qdrant", "c")
    store.ensure_collection(4)
    before = store.client.get_collection("c").config
    state = enter_bulk_mode(store, tmp_path / "bulk-mode.json")
    assert not state.active and state.note == EMBEDDED_NOTE
    assert not (tmp_path / "bulk-mode.json").exists()
    exit_bulk_mode(store, state, tmp_path / "bulk-mode.json")
    assert store.client.get_collection("c").config == before
    store.close()


def test_exit_failure_keeps_the_record_for_the_next_run(tmp_path):
    client = FakeServerClient()
    store = QdrantStore(client, "c", embedded=False)
    state_path = tmp_path / "bulk-mode.json"
    state = enter_bulk_mode(store, state_path)
    client.update_collection = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("server gone"))
    with pytest.raises(ConnectionError):
        exit_bulk_mode(store, state, state_path)
    assert load_bulk_state(state_path) == state
