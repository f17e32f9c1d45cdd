"""Reading both stores back, for assertions on what an index really holds."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from tantivy import Query

from tasks.edge_store import EdgeStore
from tasks.settings import CodebaseLayout, load_settings
from tasks.store_lease import StoreLease
from tasks.tantivy_store import TantivyStore


@contextmanager
def open_stores(root: Path, data_dir: Path | None = None):
    settings = load_settings(data_dir=data_dir) if data_dir else load_settings()
    layout = CodebaseLayout.for_root(root, settings)
    tantivy = TantivyStore.open_existing(layout.tantivy_dir)
    lease = StoreLease(layout.data_dir, "test")
    lease.take(10)
    vectors = EdgeStore.open(layout.edge_dir, lease=lease)
    try:
        yield layout, tantivy, vectors
    finally:
        vectors.close()


def tantivy_docs(tantivy: TantivyStore) -> dict[str, dict]:
    """Every stored document, by chunk id."""
    tantivy.index.reload()
    searcher = tantivy.index.searcher()
    hits = searcher.search(Query.all_query(), limit=max(searcher.num_docs, 1)).hits
    docs = {}
    for _, address in hits:
        doc = searcher.doc(address).to_dict()
        docs[doc["id"][0]] = {key: values[0] for key, values in doc.items()}
    return docs


def qdrant_points(vectors: EdgeStore) -> dict[str, dict]:
    """Every point's payload, by chunk id."""
    return {point.pop("id"): point for point in vectors.points()}


def symbols_by_path(docs: dict[str, dict], path_key: str = "path", symbol_key: str = "symbol") -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for doc in docs.values():
        found.setdefault(doc[path_key], set()).add(doc[symbol_key])
    return found


def assert_stores_agree(docs: dict[str, dict], points: dict[str, dict]) -> None:
    """The same chunk ids in both stores, each point with its chunk's path and kind."""
    assert set(docs) == set(points)
    assert {i: (p["path"], p["kind"]) for i, p in points.items()} == {i: (d["path"], d["kind"]) for i, d in docs.items()}
