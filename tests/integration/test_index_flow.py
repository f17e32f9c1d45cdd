"""The index flow on the demo crate: real Prefect server, real model, real Tantivy and Qdrant."""

import json

import numpy as np
import pytest
from tantivy import Query

from flows.index import index_codebase
from tasks.chunk import has_vector
from tasks.discover import NoRustFiles
from tasks.search import Searcher, search
from tests.conftest import FAKE_AWS_KEY
from tests.integration.helpers import assert_stores_agree, open_stores, qdrant_points, symbols_by_path, tantivy_docs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

EXPECTED_SYMBOLS = {
    "src/lib.rs": {
        "demo_tensor", "demo_tensor::MAX_RANK", "demo_tensor::TENSOR_COUNT", "demo_tensor::Shape",
        "demo_tensor::Tensor", "demo_tensor::DType", "demo_tensor::ScalarBits",
        "demo_tensor::Tensor::zeros", "demo_tensor::Tensor::num_elements",  # the generic impl's methods
        "demo_tensor::<Tensor as std::fmt::Display>", "demo_tensor::<Tensor as std::fmt::Display>::fmt",
        "demo_tensor::TensorOps", "demo_tensor::TensorOps::add_elementwise", "demo_tensor::TensorOps::is_empty",
        "demo_tensor::shape", "demo_tensor::cfg_gpu", "demo_tensor::upload_to_gpu",  # from inside cfg_gpu! { }
        "demo_tensor::testing", "demo_tensor::testing::small_shape",
    },
    "src/backend.rs": {
        "demo_tensor::backend::Backend", "demo_tensor::backend::Backend::Storage", "demo_tensor::backend::Backend::NAME",
        "demo_tensor::backend::Backend::allocate", "demo_tensor::backend::CpuBackend",
        "demo_tensor::backend::<CpuBackend as Backend>", "demo_tensor::backend::<CpuBackend as Backend>::Storage",
        "demo_tensor::backend::<CpuBackend as Backend>::NAME", "demo_tensor::backend::<CpuBackend as Backend>::allocate",
        "demo_tensor::backend::memcpy",
    },
    "src/broken.rs": {
        "demo_tensor::broken::before_the_error", "demo_tensor::broken::broken", "demo_tensor::broken::after_the_error",
    },
    "src/config.rs": {"demo_tensor::config::DEFAULT_REGION", "demo_tensor::config::region"},  # not the key's const
    "src/long.rs": {"demo_tensor::long::opcode_name"},
    "src/net.rs": {
        "demo_tensor::net", "demo_tensor::net::retry_failed_upload", "demo_tensor::net::word_frequencies",
        "demo_tensor::net::read_all",
    },
    "src/security/secrets.rs": {"demo_tensor::security::secrets", "demo_tensor::security::secrets::load_secret"},
    "gen/keep.rs": {"demo_tensor::gen::keep::kept_generated_table"},
}  # fmt: skip


def test_demo_crate_lands_in_both_stores_with_reasons_for_the_rest(demo_crate, data_dir):
    stats = index_codebase(directory=str(demo_crate))

    assert stats.files_total == 11 and stats.files_indexed == 9 and stats.files_unchanged == 0
    assert {s.path: s.reason for s in stats.files_skipped} == {
        ".aws/": "sensitive: credentials folder, not read",
        "src/dangling.rs": "broken symlink or unreadable entry",
        "src/outside.rs": "symlink pointing outside the code base",
        "src/latin1.rs": "not valid UTF-8 (byte 0xe9 on line 1); save it as UTF-8",
        "src/blob.rs": "binary file (NUL bytes), not Rust source",
    }
    assert [(w.path, w.reason.split(";")[0]) for w in stats.warnings] == [("src/broken.rs", "syntax errors at line 6, 7")]
    assert stats.secrets_withheld == ["src/config.rs:5 (AWS access key id)"]
    assert set(stats.stage_seconds) >= {"discover", "hash", "read", "parse", "chunk", "embed", "tantivy", "qdrant", "commit"}

    with open_stores(demo_crate) as (layout, tantivy, qdrant):
        docs, points = tantivy_docs(tantivy), qdrant_points(qdrant)
        assert_stores_agree(docs, points)  # the same chunks, each point with its path and kind
        assert len(docs) == stats.chunks_total == stats.chunks_written
        assert symbols_by_path(docs) == EXPECTED_SYMBOLS
        assert all(set(point) == {"path", "kind"} for point in points.values())  # the text lives in Tantivy only

        windows = sorted((d for d in docs.values() if d["symbol"] == "demo_tensor::long::opcode_name"), key=lambda d: d["window"])
        long_rs_lines = len((demo_crate / "src" / "long.rs").read_text().splitlines())
        assert len(windows) >= 2 and windows[0]["start_line"] == 1 and windows[-1]["end_line"] == long_rs_lines
        assert any('"halt_and_catch_fire"' in w["code"] for w in windows)

        snapshot = json.loads(layout.snapshot_path.read_text())
        assert sorted(leaf["rel_path"] for leaf in snapshot["leaves"]) == sorted(
            ["gen/keep.rs", "src/backend.rs", "src/broken.rs", "src/config.rs", "src/lib.rs", "src/long.rs",
             "src/net.rs", "src/security/mod.rs", "src/security/secrets.rs"]  # fmt: skip
        )  # the skipped files are not recorded: the next run tries them again
        manifest = json.loads(layout.manifest_path.read_text())
        assert manifest["model_name"] == "sentence-transformers/all-MiniLM-L6-v2" and manifest["model_dim"] == 384

        # The fake key is in neither store and found by neither search.
        assert all(FAKE_AWS_KEY not in json.dumps(d) for d in docs.values())
        assert all(FAKE_AWS_KEY not in json.dumps(p) for p in points.values())
        assert code_term_hits(tantivy, FAKE_AWS_KEY) == []
        assert all(FAKE_AWS_KEY not in hit.code for hit in tantivy.search(FAKE_AWS_KEY, limit=100))
        for ignored in ("ignored_generated_fn", "gen_other_ignored", "target_dir_fn", "scratch_ignored_fn",
                        "aws_credentials_fn", "outside_fn", "latin1_fn", "binary_blob_fn"):  # fmt: skip
            assert code_term_hits(tantivy, ignored) == [], ignored


def code_term_hits(tantivy, identifier: str):
    """Chunks whose code holds this exact identifier (the store's own term dictionary)."""
    return tantivy._run(Query.term_query(tantivy.schema, "code", identifier.lower()), limit=10)


def test_hybrid_search_finds_items_and_never_the_secret(demo_crate, data_dir):
    index_codebase(directory=str(demo_crate))
    searcher = Searcher(demo_crate)
    try:
        top = searcher.search("retry an upload that failed", limit=3)
        assert top[0].symbol == "demo_tensor::net::retry_failed_upload" and top[0].file == "src/net.rs"
        assert searcher.search("HashMap entry or_insert", limit=1)[0].symbol == "demo_tensor::net::word_frequencies"
        assert searcher.search("product of the lengths of every dimension", limit=1)[0].symbol == (
            "demo_tensor::Tensor::num_elements"
        )
        for query in (FAKE_AWS_KEY, "AWS access key of the test account", "AKIA"):
            for result in searcher.search(query, limit=50):
                assert FAKE_AWS_KEY not in result.snippet and result.symbol != "demo_tensor::config::AWS_ACCESS_KEY_ID"
    finally:
        searcher.close()


def test_incremental_run_changes_exactly_what_changed(demo_crate, data_dir):
    index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (_, tantivy, qdrant):
        before = tantivy_docs(tantivy)
        vectors_before = {p["id"]: p["vector"] for p in qdrant.points("src/lib.rs", with_vectors=True)}

    net = demo_crate / "src" / "net.rs"
    net.write_text(net.read_text().replace("word_frequencies", "count_words"))
    (demo_crate / "src" / "extra.rs").write_text("/// Added later.\npub fn added_later_fn() -> u8 { 7 }\n")
    (demo_crate / "src" / "backend.rs").unlink()

    stats = index_codebase(directory=str(demo_crate))
    assert (stats.files_indexed, stats.files_unchanged, stats.files_deleted) == (2, 7, 1)
    with open_stores(demo_crate) as (_, tantivy, qdrant):
        docs, points = tantivy_docs(tantivy), qdrant_points(qdrant)
        assert_stores_agree(docs, points)
        by_path = symbols_by_path(docs)
        assert "src/backend.rs" not in by_path
        assert by_path["src/extra.rs"] == {"demo_tensor::extra::added_later_fn"}
        assert "demo_tensor::net::count_words" in by_path["src/net.rs"]
        assert "demo_tensor::net::word_frequencies" not in by_path["src/net.rs"]
        assert by_path["src/lib.rs"] == EXPECTED_SYMBOLS["src/lib.rs"]
        # Both changed files were rewritten in the stores, but only text that changed was embedded:
        # the renamed function and the new file's function; net.rs's other chunks came from the cache.
        assert stats.chunks_written == sum(1 for d in docs.values() if d["path"] in ("src/net.rs", "src/extra.rs")) == 5
        assert (stats.chunks_embedded, stats.chunks_reused) == (2, 3)
        unchanged_ids = {i for i, d in before.items() if d["path"] not in ("src/net.rs", "src/backend.rs")}
        assert unchanged_ids <= set(docs)
        after_vectors = {p["id"]: p["vector"] for p in qdrant.points("src/lib.rs", with_vectors=True)}
        assert after_vectors.keys() == vectors_before.keys()
        assert all(np.allclose(after_vectors[i], vectors_before[i]) for i in after_vectors)
        assert tantivy.search("added_later_fn")[0].symbol == "demo_tensor::extra::added_later_fn"
        assert code_term_hits(tantivy, "word_frequencies") == []
        assert [h.symbol for h in code_term_hits(tantivy, "count_words")] == ["demo_tensor::net::count_words"]
    found = search(demo_crate, "added_later_fn returns seven", engine="vector", limit=3)
    assert found[0].symbol == "demo_tensor::extra::added_later_fn"
    assert "demo_tensor::net::word_frequencies" not in {r.symbol for r in search(demo_crate, "word_frequencies", engine="vector")}

    unchanged = index_codebase(directory=str(demo_crate))
    assert unchanged.chunks_embedded == 0 and unchanged.files_indexed == 0 and unchanged.files_unchanged == 9

    forced = index_codebase(directory=str(demo_crate), force_reindex=True)
    assert forced.files_indexed == 9 and forced.chunks_written == forced.chunks_total == len(docs)
    vectored = {i for i, d in docs.items() if has_vector(d["kind"], d["name"], d["window"])}
    assert (forced.chunks_embedded, forced.chunks_reused) == (0, len(vectored))  # a warm cache: nothing to embed
    with open_stores(demo_crate) as (_, tantivy, qdrant):
        assert set(tantivy_docs(tantivy)) == set(docs) and set(qdrant_points(qdrant)) == vectored  # same deterministic ids

    reembedded = index_codebase(directory=str(demo_crate), force_reembed=True)
    assert (reembedded.chunks_embedded, reembedded.chunks_reused) == (len(vectored), 0)


def test_a_failed_run_keeps_the_previous_snapshot_and_the_next_run_repairs(demo_crate, data_dir, monkeypatch):
    index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (layout, tantivy, _):
        snapshot_before = layout.snapshot_path.read_text()
        ids_before = set(tantivy_docs(tantivy))

    (demo_crate / "src" / "net.rs").write_text("/// Rewritten.\npub fn rewritten_fn() {}\n")
    from tasks import session

    real_write = session.write_batch
    monkeypatch.setattr(session, "write_batch", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (layout, _, _):
        assert layout.snapshot_path.read_text() == snapshot_before

    monkeypatch.setattr(session, "write_batch", real_write)
    stats = index_codebase(directory=str(demo_crate))
    assert stats.files_indexed == 1
    with open_stores(demo_crate) as (_, tantivy, qdrant):
        docs, points = tantivy_docs(tantivy), qdrant_points(qdrant)
        assert_stores_agree(docs, points)
        assert symbols_by_path(docs)["src/net.rs"] == {"demo_tensor::net::rewritten_fn"}
        assert len(set(docs) ^ ids_before) > 0


def test_a_different_model_stops_the_run_and_asks_for_force(demo_crate, data_dir):
    index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (layout, tantivy, _):
        manifest = json.loads(layout.manifest_path.read_text())
        count = tantivy.count()
    manifest["model_id"], manifest["model_name"] = "jinaai/jina-embeddings-v2-base-code#1", "jinaai/jina-embeddings-v2-base-code"
    layout.manifest_path.write_text(json.dumps(manifest))
    (demo_crate / "src" / "extra.rs").write_text("pub fn extra() {}\n")
    with pytest.raises(Exception, match=r"built with model jinaai/.*--force"):
        index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (_, tantivy, _):
        assert tantivy.count() == count  # nothing was written


def test_no_rust_files_creates_no_index(tmp_path, data_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no rust here")
    with pytest.raises(NoRustFiles, match="no .rs files to index"):
        index_codebase(directory=str(tmp_path / "empty"))
    assert not data_dir.exists()
