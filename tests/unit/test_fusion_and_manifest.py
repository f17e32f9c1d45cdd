import pytest

from tasks.commit import Manifest, incompatibility, load_manifest, save_manifest
from tasks.search import reciprocal_rank_fusion


def test_rrf_hand_computed():
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert sorted(scores, key=scores.get, reverse=True) == ["a", "c", "b"]


def test_rrf_counts_a_key_once_per_ranking():
    assert reciprocal_rank_fusion([["a", "a", "b"]], k=0) == {"a": 1.0, "b": 0.5}


def manifest(**changes) -> Manifest:
    base = dict(root="/x", codebase_id="x-1", schema_version=1, chunker_version=1, model_name="m", model_id="m#1",
                model_dim=384, model_source="package", qdrant="embedded")  # fmt: skip
    return Manifest(**{**base, **changes})


def test_manifest_roundtrip(tmp_path):
    path = tmp_path / "manifest.json"
    save_manifest(path, manifest(last_run={"mode": "sequential"}))
    loaded = load_manifest(path)
    assert loaded.model_id == "m#1" and loaded.last_run == {"mode": "sequential"} and loaded.updated_at


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model_id": "other#2", "model_name": "other"}, "built with model m"),
        ({"model_dim": 768}, "built with model m"),
        ({"chunker_version": 2}, "older version"),
        ({"qdrant": "http://q:6333"}, "Qdrant embedded"),
    ],
)
def test_incompatible_indexes_are_explained(change, words):
    assert words in incompatibility(manifest(), manifest(**change))
    assert incompatibility(manifest(), manifest()) is None
