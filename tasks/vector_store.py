"""The vector side of an index, behind one small interface, and the two stores that implement it.

- `EdgeStore` (tasks/edge_store.py), the default: Qdrant Edge, Qdrant's own engine in this
  process, one shard per code base in its data folder. One process at a time may open it;
  tasks/store_lease.py says whose turn it is.
- `ServerStore` (tasks/server_store.py): a collection on a Qdrant server or cluster through
  qdrant-client, when RCI_QDRANT_URL is set.

Both hold, per chunk, its vector and a payload of `path` and `kind`, each with a keyword index:
deleting a file's chunks and the search filters go through those. Nothing more: what a hit
shows (symbol, lines, text) is read from Tantivy by chunk id, which stores it already, so no
chunk's text is kept twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from tasks.records import Chunk
from tasks.settings import CodebaseLayout, Settings

# A file's chunks are deleted, and filtered searches select files, this many paths at a time.
PATHS_PER_FILTER = 512


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    score: float


class VectorsUnavailable(RuntimeError):
    """The embedded store is another process's turn (an index run writes it): search says so
    and answers from BM25."""


class VectorStore(Protocol):
    location: str  # "embedded" or the server's URL, as the manifest records it
    optimize_seconds: float  # spent building HNSW graphs in this process's calls so far

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...

    def delete_files(self, rel_paths: Sequence[str]) -> None: ...

    def search(
        self, vector: np.ndarray, limit: int, kinds: Sequence[str] = (), paths: Sequence[str] | None = None
    ) -> list[VectorHit]:
        """Nearest chunks, best first; only of these kinds and in these files when given."""
        ...

    def ids(self) -> set[str]: ...

    def count(self) -> int: ...

    def vector_of(self, point_id: str) -> np.ndarray | None: ...

    def pause_indexing(self, record: Callable[[dict], None]) -> dict:
        """Bulk mode begins: `record(what resume_indexing will need)` is called first, then HNSW
        building stops; returns what was recorded."""
        ...

    def resume_indexing(self, paused: dict) -> None:
        """Bulk mode ends: the graph is built (Edge) or its building restored (server)."""
        ...

    def keep_searchable(self) -> None:
        """After an incremental run: whatever keeps searches at HNSW speed."""
        ...

    def commit(self) -> None:
        """Make every write so far durable before the manifest and snapshot say it happened."""
        ...

    def close(self) -> None: ...


def payload_of(chunk: Chunk) -> dict:
    return {"path": chunk.rel_path, "kind": chunk.kind}


def open_for_run(
    layout: CodebaseLayout, settings: Settings, dim: int | None = None, start_over: bool = False
) -> VectorStore:
    """The store an index run writes; with `dim`, created (empty) when `start_over` or missing.
    The embedded store is taken for the whole run: a warm searcher elsewhere lets go of it."""
    if settings.qdrant_url:
        from tasks.server_store import ServerStore

        return ServerStore.connect(settings, layout.collection, dim, start_over)
    from tasks.edge_store import EdgeStore
    from tasks.store_lease import StoreLease

    lease = StoreLease(layout.data_dir, "index run")
    lease.take(settings.store_wait_seconds)
    try:
        return EdgeStore.open(layout.edge_dir, dim, start_over, lease)
    except BaseException:
        lease.release()
        raise


def open_for_reading(layout: CodebaseLayout, settings: Settings, wait_seconds: float = 5.0) -> VectorStore:
    """The store a one-off reader (a search, `rci status`) opens and closes. Raises
    VectorsUnavailable while an index run has the embedded store."""
    if settings.qdrant_url:
        from tasks.server_store import ServerStore

        return ServerStore.connect(settings, layout.collection)
    from tasks.disk_space import reader_can_open
    from tasks.edge_store import ONE_OFF_EXACT_POINTS, EdgeStore
    from tasks.store_lease import StoreLease

    if why_not := reader_can_open(layout.data_dir):
        raise VectorsUnavailable(why_not)
    lease = StoreLease(layout.data_dir, "search")
    lease.take_unless_indexing(wait_seconds)
    try:
        store = EdgeStore.open(layout.edge_dir, lease=lease)
        store.exact = store.approximate_count() <= ONE_OFF_EXACT_POINTS
        return store
    except BaseException:
        lease.release()
        raise


def open_warm(layout: CodebaseLayout, settings: Settings):
    """The store a long-lived reader keeps between queries; the embedded one lets go of the
    shard whenever another process wants it (tasks/edge_store.py, WarmEdgeReader)."""
    if settings.qdrant_url:
        from tasks.server_store import ServerStore

        return ServerStore.connect(settings, layout.collection)
    from tasks.edge_store import WarmEdgeReader

    return WarmEdgeReader(layout.data_dir, layout.edge_dir)


def chunked(paths: Iterable[str], size: int = PATHS_PER_FILTER) -> Iterable[list[str]]:
    paths = list(paths)
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def remove_old_layout(data_dir: Path) -> None:
    """Schema 5 and older kept qdrant-client local stores in shards under `qdrant/`."""
    import shutil

    shutil.rmtree(Path(data_dir) / "qdrant", ignore_errors=True)
