"""Every mode builds the same index; the embedding cache spares the model on reruns and renames."""

import numpy as np
import pytest

from flows.index import index_codebase
from tests.integration.helpers import assert_stores_agree, open_stores, qdrant_points, symbols_by_path, tantivy_docs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def index_contents(crate):
    with open_stores(crate) as (_, tantivy, qdrant):
        docs = tantivy_docs(tantivy)
        points = {
            p["id"]: ({"path": p["path"], "kind": p["kind"]}, np.asarray(p["vector"], dtype=np.float32))
            for p in qdrant.points(with_vectors=True)
        }
    return docs, points


def test_every_mode_builds_the_same_index(demo_crate, tmp_path, monkeypatch):
    results = {}
    for mode, env in [
        ("sequential", {}),
        ("parallel", {"RCI_PARSE_PROCESSES": "2", "RCI_FILE_BATCH_SIZE": "3"}),  # worker processes parse
        ("pipeline", {"RCI_FILE_BATCH_SIZE": "2"}),  # several batches in flight
    ]:
        monkeypatch.setenv("RCI_DATA_DIR", str(tmp_path / f"data-{mode}"))
        for key in ("RCI_PARSE_PROCESSES", "RCI_FILE_BATCH_SIZE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        stats = index_codebase(directory=str(demo_crate), indexing_mode=mode)
        assert stats.mode == mode and stats.plan["mode"] == mode
        results[mode] = (stats, *index_contents(demo_crate))

    base_stats, base_docs, base_points = results["sequential"]
    assert len(base_docs) == base_stats.chunks_total == 45
    for mode in ("parallel", "pipeline"):
        stats, docs, points = results[mode]
        assert (stats.files_indexed, stats.chunks_written, stats.secrets_withheld) == (
            base_stats.files_indexed, base_stats.chunks_written, base_stats.secrets_withheld,
        )  # fmt: skip
        assert sorted((s.path, s.reason) for s in stats.files_skipped) == sorted(
            (s.path, s.reason) for s in base_stats.files_skipped
        )
        assert docs == base_docs, mode  # same ids, texts and stored fields
        assert points.keys() == base_points.keys()
        for chunk_id, (payload, vector) in points.items():
            base_payload, base_vector = base_points[chunk_id]
            assert payload == base_payload
            assert np.allclose(vector, base_vector, atol=1e-4), (mode, docs[chunk_id]["symbol"])


def test_renamed_file_and_force_reindex_embed_nothing(demo_crate, data_dir):
    first = index_codebase(directory=str(demo_crate))
    # 45 chunks, 44 with a vector: the inherent impl's is in BM25 alone.
    assert (first.chunks_written, first.chunks_embedded, first.chunks_reused) == (45, 44, 0)
    (demo_crate / "src" / "net.rs").rename(demo_crate / "src" / "transport.rs")

    renamed = index_codebase(directory=str(demo_crate))
    assert (renamed.files_indexed, renamed.files_deleted) == (1, 1)
    assert renamed.chunks_embedded == 0 and renamed.chunks_reused == renamed.chunks_written == 4
    with open_stores(demo_crate) as (_, tantivy, qdrant):
        docs, points = tantivy_docs(tantivy), qdrant_points(qdrant)
        assert_stores_agree(docs, points)
        by_path = symbols_by_path(docs)
        assert "src/net.rs" not in by_path and "src/net.rs" not in {p["path"] for p in points.values()}
        assert "demo_tensor::transport::retry_failed_upload" in by_path["src/transport.rs"]
        assert tantivy.search("retry_failed_upload")[0].path == "src/transport.rs"

    forced = index_codebase(directory=str(demo_crate), force_reindex=True)
    assert (forced.chunks_written, forced.chunks_embedded, forced.chunks_reused) == (45, 0, 44)


def test_the_commit_finds_the_batches_resources_released(demo_crate, data_dir, monkeypatch):
    """Tantivy's merge after the commit maps the index's files: the models and parse workers
    are gone by then (tasks/session.py release_batch_resources)."""
    from tasks import session as session_module
    from tasks.tantivy_store import TantivyStore

    monkeypatch.setenv("RCI_PARSE_PROCESSES", "2")
    seen, held_at_commit = [], []
    release, commit = session_module.IndexSession.release_batch_resources, TantivyStore.commit

    def remember(index):
        seen.append((len(index.embedders), len(index.worker_pids()), 0))
        release(index)
        seen.append((len(index.embedders), len(index.worker_pids()), 0))
        held_at_commit.append(index)

    def commit_and_look(store):
        index = held_at_commit[-1]
        seen.append((len(index.embedders), len(index.worker_pids()), 0))
        commit(store)

    monkeypatch.setattr(session_module.IndexSession, "release_batch_resources", remember)
    monkeypatch.setattr(TantivyStore, "commit", commit_and_look)
    stats = index_codebase(directory=str(demo_crate), indexing_mode="parallel")

    models, parse_workers, _ = seen[0]  # held while the batches ran
    assert models == stats.plan["workers"] and parse_workers >= 1
    assert seen[1:] == [(0, 0, 0), (0, 0, 0)]  # released, and still so when Tantivy commits
    with open_stores(demo_crate) as (_, tantivy, qdrant):
        assert tantivy.search("retry_failed_upload")[0].path == "src/net.rs"
        assert tantivy.count() == stats.chunks_total == 45
        # Every chunk has a vector but the inherent impl's (its methods have their own).
        points = qdrant.ids()
        without = {(d["kind"], d["symbol"]) for i, d in tantivy_docs(tantivy).items() if i not in points}
        assert without == {("impl", "demo_tensor::Tensor")} and qdrant.count() == 44
