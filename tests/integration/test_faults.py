"""Fault injection on the real flow (real Prefect server, model and stores): transient failures
are retried by Prefect; a permanent one leaves bulk mode exited and the index repairable.
Killed runs (SIGKILL) are in tests/integration/test_kills.py."""

import json
from collections import Counter

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.index import index_codebase
from tasks import bulk, commit, merkle, session
from tasks.commit import load_unfinished
from tests.integration.helpers import assert_stores_agree, open_stores, qdrant_points, symbols_by_path, tantivy_docs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def fails_once(name: str, real, calls: Counter):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        if calls[name] == 1:
            raise ConnectionError(f"injected transient failure in {name}")
        return real(*args, **kwargs)

    return wrapper


def task_attempts(flow_run_id) -> dict[str, int]:
    """How many times Prefect ran each retried task of a flow run."""
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {t.name.rsplit("-", 1)[0]: t.run_count for t in tasks if t.name.startswith(("merkle", "bulk", "commit"))}


def test_transient_failures_are_retried_and_the_run_completes(demo_crate, data_dir, monkeypatch):
    calls: Counter = Counter()
    monkeypatch.setattr(merkle, "build_snapshot", fails_once("merkle", merkle.build_snapshot, calls))
    monkeypatch.setattr(bulk, "enter_bulk_mode", fails_once("bulk-enter", bulk.enter_bulk_mode, calls))
    monkeypatch.setattr(bulk, "exit_bulk_mode", fails_once("bulk-exit", bulk.exit_bulk_mode, calls))
    monkeypatch.setattr(commit, "commit_index", fails_once("commit", commit.commit_index, calls))

    state = index_codebase(directory=str(demo_crate), return_state=True)
    assert state.is_completed(), state.message
    assert calls == {"merkle": 2, "bulk-enter": 2, "bulk-exit": 2, "commit": 2}
    # Prefect ran each of those tasks twice (the retry), and the rest once.
    attempts = task_attempts(state.state_details.flow_run_id)
    assert attempts == {"merkle": 2, "bulk-enter": 2, "bulk-exit": 2, "commit": 2}
    stats = state.result()
    with open_stores(demo_crate) as (layout, tantivy, qdrant):
        assert_stores_agree(tantivy_docs(tantivy), qdrant_points(qdrant))
        assert stats.chunks_total == 45 and not layout.bulk_state_path.exists()


def test_permanent_failure_mid_load_exits_bulk_mode_and_the_next_run_repairs(demo_crate, data_dir, monkeypatch):
    first = index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (layout, tantivy, _):
        snapshot_before = layout.snapshot_path.read_text()
        ids_before = set(tantivy_docs(tantivy))

    # 1. An incremental load that dies on its second batch: the previous snapshot stays.
    (demo_crate / "src" / "net.rs").write_text("/// Rewritten.\npub fn rewritten_net() {}\n")
    (demo_crate / "src" / "extra.rs").write_text("/// New.\npub fn extra_fn() {}\n")
    real_write = session.write_batch
    written = Counter()

    def dies_on_second_batch(index, batch):
        written["batches"] += 1
        if written["batches"] >= 2:
            raise OSError("injected permanent failure: disk full")
        return real_write(index, batch)

    monkeypatch.setattr(session, "write_batch", dies_on_second_batch)
    monkeypatch.setenv("RCI_FILE_BATCH_SIZE", "1")
    with pytest.raises(OSError, match="disk full"):
        index_codebase(directory=str(demo_crate), indexing_mode="pipeline")
    assert layout.snapshot_path.read_text() == snapshot_before

    # 2. A force reindex (bulk mode) that dies mid-load: bulk mode is exited all the same.
    written.clear()
    with pytest.raises(OSError, match="disk full"):
        index_codebase(directory=str(demo_crate), force_reindex=True, indexing_mode="pipeline")
    assert not layout.bulk_state_path.exists()
    # The stores were being rebuilt: the record says so, and the next run starts over.
    assert load_unfinished(layout).start_over

    # 3. The next run, without the fault, repairs everything.
    monkeypatch.setattr(session, "write_batch", real_write)
    repaired = index_codebase(directory=str(demo_crate))
    assert repaired.files_indexed == 10 and repaired.chunks_written == repaired.chunks_total
    # Only the two new texts can need the model: the rest come from the embedding cache, and the
    # new ones too when a failed run got to embed them before dying (the cache is content-addressed).
    assert repaired.chunks_embedded <= 2
    assert repaired.chunks_embedded + repaired.chunks_reused == repaired.chunks_written - 1  # the inherent impl: BM25 alone
    with open_stores(demo_crate) as (layout, tantivy, qdrant):
        docs, points = tantivy_docs(tantivy), qdrant_points(qdrant)
        assert_stores_agree(docs, points)
        assert ids_before - set(docs)
        by_path = symbols_by_path(docs)
        assert by_path["src/net.rs"] == {"demo_tensor::net::rewritten_net"}
        assert by_path["src/extra.rs"] == {"demo_tensor::extra::extra_fn"}
        snapshot = json.loads(layout.snapshot_path.read_text())
        assert "src/extra.rs" in {leaf["rel_path"] for leaf in snapshot["leaves"]}
    assert first.chunks_total == 45
