"""A code base's vectors in a collection on a Qdrant server or cluster (RCI_QDRANT_URL), through qdrant-client.

The server keeps its own HNSW graphs and builds them in the background. Bulk mode reads the
collection's own HNSW `m` and optimizer `indexing_threshold`, sets both to 0 for the load
(no graph building while every point arrives), and restores exactly what it read, never
hard-coded values. Every write waits until the server has applied it (`wait=True`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from tasks.records import Chunk
from tasks.settings import Settings
from tasks.vector_store import VectorHit, chunked, payload_of

UPSERT_POINTS = 256  # points per request
SCROLL_POINTS = 1024


class ServerStore:
    optimize_seconds = 0.0  # the server builds its graphs in the background

    def __init__(self, client: QdrantClient, collection: str, location: str):
        self.client = client
        self.collection = collection
        self.location = location

    @classmethod
    def connect(cls, settings: Settings, collection: str, dim: int | None = None, start_over: bool = False) -> ServerStore:
        """The collection; with `dim`, created when missing (or dropped first when starting over)."""
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        store = cls(QdrantClient(url=settings.qdrant_url, api_key=api_key, timeout=60), collection, settings.qdrant_url)
        if dim is None:
            if not store.client.collection_exists(collection):
                raise FileNotFoundError(f"Qdrant at {settings.qdrant_url} has no collection {collection}; index the code base first")
            return store
        if start_over and store.client.collection_exists(collection):
            store.client.delete_collection(collection)
        store.ensure_collection(dim)
        return store

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (cosine, `dim` dimensions) with keyword indexes on `path` and `kind`."""
        if self.client.collection_exists(self.collection):
            size = int(self.client.get_collection(self.collection).config.params.vectors.size)
            if size != dim:
                raise RuntimeError(
                    f"collection {self.collection} holds {size}-dimension vectors but the model makes {dim}; "
                    "rebuild it with --force"
                )
            return
        self.client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
        )
        for field in ("path", "kind"):  # delete by file; search filters
            self.client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD, wait=True)

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        for start in range(0, len(chunks), UPSERT_POINTS):
            part = chunks[start : start + UPSERT_POINTS]
            rows = vectors[start : start + len(part)].tolist()
            points = [models.PointStruct(id=c.id, vector=row, payload=payload_of(c)) for c, row in zip(part, rows)]
            self.client.upsert(self.collection, points=points, wait=True)

    def delete_files(self, rel_paths: Sequence[str]) -> None:
        for paths in chunked(rel_paths):
            self.client.delete(self.collection, points_selector=models.FilterSelector(filter=_paths(paths)), wait=True)

    def pause_indexing(self, record) -> dict:
        config = self.client.get_collection(self.collection).config
        paused = {"hnsw_m": config.hnsw_config.m, "indexing_threshold": config.optimizer_config.indexing_threshold}
        record(paused)  # before anything changes: a run that dies next still knows the originals
        self.client.update_collection(
            self.collection,
            hnsw_config=models.HnswConfigDiff(m=0),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0),
        )
        return paused

    def resume_indexing(self, paused: dict) -> None:
        self.client.update_collection(
            self.collection,
            hnsw_config=models.HnswConfigDiff(m=paused["hnsw_m"]),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=paused["indexing_threshold"]),
        )

    def keep_searchable(self) -> None:
        """The server's optimizers index new points in the background."""

    def commit(self) -> None:
        """Every write was acknowledged once applied (wait=True); reading the count back proves
        the collection answers before the snapshot says so."""
        self.count()

    def search(
        self, vector: np.ndarray, limit: int, kinds: Sequence[str] = (), paths: Sequence[str] | None = None
    ) -> list[VectorHit]:
        conditions = []
        if kinds:
            conditions.append(models.FieldCondition(key="kind", match=models.MatchAny(any=list(kinds))))
        if paths is not None:
            conditions.append(models.FieldCondition(key="path", match=models.MatchAny(any=list(paths))))
        response = self.client.query_points(
            self.collection,
            query=np.asarray(vector, dtype=np.float32).tolist(),
            limit=limit,
            query_filter=models.Filter(must=conditions) if conditions else None,
            with_payload=False,
        )
        return [VectorHit(str(point.id), float(point.score)) for point in response.points]

    def ids(self) -> set[str]:
        found: set[str] = set()
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection, limit=SCROLL_POINTS, offset=offset, with_payload=False, with_vectors=False
            )
            found.update(str(record.id) for record in records)
            if offset is None:
                return found

    def count(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def vector_of(self, point_id: str) -> np.ndarray | None:
        records = self.client.retrieve(self.collection, [point_id], with_payload=False, with_vectors=True)
        return np.asarray(records[0].vector, dtype=np.float32) if records else None

    def call(self, what):
        """`what(store)`: a server needs no turn-taking (the same call as the embedded reader's)."""
        return what(self)

    def close(self) -> None:
        self.client.close()


def _paths(paths: Sequence[str]) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="path", match=models.MatchAny(any=list(paths)))])
