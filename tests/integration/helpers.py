"""Reading both stores back, for assertions on what an index really holds."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from tantivy import Query

from tasks.qdrant_store import QdrantStore
from tasks.settings import CodebaseLayout, load_settings
from tasks.tantivy_store import TantivyStore


@contextmanager
def open_stores(root: Path, data_dir: Path | None = None):
    settings = load_settings(data_dir=data_dir) if data_dir else load_settings()
    layout = CodebaseLayout.for_root(root, settings)
    tantivy = TantivyStore.open_existing(layout.tantivy_dir)
    qdrant = QdrantStore.open(layout.qdrant_dir, layout.collection)
    try:
        yield layout, tantivy, qdrant
    finally:
        qdrant.close()


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


def qdrant_points(qdrant: QdrantStore) -> dict[str, dict]:
    """Every point's payload, by chunk id."""
    return {str(record.id): record.payload for record in qdrant.records()}


def symbols_by_path(docs: dict[str, dict], path_key: str = "path", symbol_key: str = "symbol") -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for doc in docs.values():
        found.setdefault(doc[path_key], set()).add(doc[symbol_key])
    return found
