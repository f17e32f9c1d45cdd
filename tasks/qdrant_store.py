"""The vector side: one Qdrant collection per code base, structured payloads.

Embedded (path mode, in shards: tasks/qdrant_shards.py) by default, a server when
RCI_QDRANT_URL is set: the same client API either way. Payloads are structured fields, not JSON strings, so delete-by-file
matches on the `path` field (through a keyword index on a server).
"""

from __future__ import annotations

import fcntl
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from tasks.records import Chunk
from tasks.settings import SHARD_POINTS

# qdrant-client's own advice: local mode is for collections of up to 20,000 points. It loads
# every point into Python objects when opened: the medium corpus's 31,270 points took 8.1 s
# and 770 MB to open (a server keeps them in its own process, on disk and indexed).
EMBEDDED_POINTS_ADVISED = 20_000


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: str
    score: float
    payload: dict


def _store_in_use(qdrant_dir: Path) -> RuntimeError:
    return RuntimeError(
        f"the embedded Qdrant store at {qdrant_dir} is in use by another rci process; wait for it to finish"
    )


def connect(qdrant_dir: Path, url: str | None = None, api_key: str | None = None) -> QdrantClient:
    if url:
        return QdrantClient(url=url, api_key=api_key, timeout=60)
    qdrant_dir = Path(qdrant_dir)
    qdrant_dir.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(qdrant_dir))
    except RuntimeError as error:
        if "already accessed" in str(error):
            raise _store_in_use(qdrant_dir) from error
        raise


def remove_embedded_store(qdrant_dir: Path, first: Callable[[], None] = lambda: None) -> None:
    """Empty a code base's embedded store folder without opening it, for a run that starts over.
    Takes the store's lock first (an exclusive flock on `.lock`, as an open store holds), so a store
    another process has open is left alone and the run stops with the usual message; `first`
    runs once the lock is held, before anything is removed."""
    qdrant_dir = Path(qdrant_dir)
    if not qdrant_dir.is_dir():
        first()
        return
    with open(qdrant_dir / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _store_in_use(qdrant_dir) from None
        first()
        for entry in qdrant_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name != ".lock":
                entry.unlink()


def _path_filter(rel_paths: Sequence[str]) -> models.Filter:
    if len(rel_paths) == 1:
        match = models.MatchValue(value=rel_paths[0])
    else:
        match = models.MatchAny(any=list(rel_paths))
    return models.Filter(must=[models.FieldCondition(key="path", match=match)])


class QdrantStore:
    def __init__(self, client: QdrantClient, collection: str, embedded: bool, upsert_batch: int = 256):
        self._client = client
        self.collection = collection
        self.embedded = embedded
        self.upsert_batch = upsert_batch

    @classmethod
    def open(
        cls,
        qdrant_dir: Path,
        collection: str,
        url: str | None = None,
        api_key: str | None = None,
        upsert_batch: int = 256,
        shard_points: int = SHARD_POINTS,
        keep_shards_open: bool = False,
    ) -> QdrantStore:
        """A server's collection when `url` is given, else the embedded store in `qdrant_dir`,
        split into shards of about `shard_points` points (tasks/qdrant_shards.py)."""
        if not url:
            from tasks.qdrant_shards import ShardedStore

            return ShardedStore(qdrant_dir, collection, shard_points, keep_shards_open, upsert_batch)
        return cls(connect(qdrant_dir, url, api_key), collection, False, upsert_batch)

    @property
    def client(self) -> QdrantClient:
        return self._client

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection)

    def ensure_collection(self, dim: int) -> None:
        """Create the collection (cosine, `dim` dimensions) with a keyword index on `path`."""
        if self.exists():
            size = self.vector_size()
            if size != dim:
                raise RuntimeError(
                    f"collection {self.collection} holds {size}-dimension vectors but the model makes {dim}; "
                    "rebuild it with --force"
                )
            return
        self._create_in(self.client, dim)

    def _create_in(self, client: QdrantClient, dim: int) -> None:
        client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
        )
        if not self.embedded:  # the embedded store has no payload indexes (it says so, and scans)
            for field in ("path", "kind"):  # delete by file; search filters
                client.create_payload_index(self.collection, field, models.PayloadSchemaType.KEYWORD, wait=True)

    def vector_size(self) -> int:
        params = self.client.get_collection(self.collection).config.params.vectors
        return int(params.size)

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        return self._upsert_into(self.client, chunks, vectors)

    def _upsert_into(self, client: QdrantClient, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        for start in range(0, len(chunks), self.upsert_batch):
            batch = chunks[start : start + self.upsert_batch]
            points = [
                models.PointStruct(id=chunk.id, vector=vectors[start + i].tolist(), payload=payload_of(chunk))
                for i, chunk in enumerate(batch)
            ]
            with warnings.catch_warnings():
                # The embedded store warns past 20k points; `rci status` reports the size instead.
                warnings.simplefilter("ignore", UserWarning)
                client.upsert(self.collection, points=points, wait=True)
        return len(chunks)

    def delete_files(self, rel_paths: Iterable[str]) -> None:
        self._delete_from(self.client, list(rel_paths))

    def _delete_from(self, client: QdrantClient, paths: Sequence[str]) -> None:
        for start in range(0, len(paths), 512):
            selector = models.FilterSelector(filter=_path_filter(paths[start : start + 512]))
            client.delete(self.collection, points_selector=selector, wait=True)

    def delete_collection(self) -> None:
        if self.exists():
            self.client.delete_collection(self.collection)

    def count(self) -> int:
        if not self.exists():
            return 0
        return self.client.count(self.collection, exact=True).count

    def ids(self) -> set[str]:
        return {str(record.id) for record in self.records(with_payload=False)}

    def records(self, with_payload: bool = True, with_vectors: bool = False) -> list[models.Record]:
        """Every point (for status and tests; a whole collection in memory)."""
        return self._records_in(self.client, with_payload, with_vectors) if self.exists() else []

    def _records_in(self, client: QdrantClient, with_payload: bool, with_vectors: bool) -> list[models.Record]:
        found: list[models.Record] = []
        offset = None
        while True:
            records, offset = client.scroll(
                self.collection, limit=1024, offset=offset, with_payload=with_payload, with_vectors=with_vectors
            )
            found += records
            if offset is None:
                return found

    def points_of(self, rel_path: str, with_vectors: bool = False) -> list[models.Record]:
        records, _ = self.client.scroll(
            self.collection, scroll_filter=_path_filter([rel_path]), limit=100_000, with_vectors=with_vectors
        )
        return records

    def search(
        self, vector: np.ndarray, limit: int = 50, kinds: Iterable[str] | None = None, paths: Iterable[str] | None = None
    ) -> list[VectorHit]:
        """Nearest chunks, best first; only of these kinds and in these files when given."""
        return self._search_in(self.client, vector, limit, kinds, paths)

    def _search_in(
        self,
        client: QdrantClient,
        vector: np.ndarray,
        limit: int,
        kinds: Iterable[str] | None,
        paths: Iterable[str] | None,
    ) -> list[VectorHit]:
        """The search of one client's collection.

        A server filters through its payload indexes. The embedded store evaluates a filter in
        Python for every point (630 ms at 30k points against 40 ms without), so there the
        filter is first applied to a larger unfiltered candidate list, and pushed down only when
        that list was too short to fill `limit` (a selective filter).
        """
        kinds = set(kinds or [])
        paths = set(paths) if paths is not None else None
        conditions = []
        if kinds:
            conditions.append(models.FieldCondition(key="kind", match=models.MatchAny(any=sorted(kinds))))
        if paths is not None:
            conditions.append(models.FieldCondition(key="path", match=models.MatchAny(any=sorted(paths))))
        if not conditions:
            return self._query(client, vector, limit, None)
        if not self.embedded:
            return self._query(client, vector, limit, models.Filter(must=conditions))
        fetch = max(limit * 8, 400)
        candidates = self._query(client, vector, fetch, None)
        hits = [
            hit for hit in candidates
            if (not kinds or hit.payload.get("kind") in kinds) and (paths is None or hit.payload.get("path") in paths)
        ][:limit]  # fmt: skip
        if len(hits) < limit and len(candidates) == fetch:
            return self._query(client, vector, limit, models.Filter(must=conditions))
        return hits

    def _query(
        self, client: QdrantClient, vector: np.ndarray, limit: int, query_filter: models.Filter | None
    ) -> list[VectorHit]:
        response = client.query_points(
            self.collection, query=vector.tolist(), limit=limit, with_payload=True, query_filter=query_filter
        )
        return [VectorHit(str(point.id), float(point.score), point.payload or {}) for point in response.points]

    def size_note(self, points: int) -> str | None:
        """Advice when the store is past the size it is meant for (the embedded store's); None here."""
        return None

    def release_memory(self) -> None:
        """Let go of the points this process holds (a server holds them: nothing here)."""

    def close(self) -> None:
        self.client.close()


def payload_of(chunk: Chunk) -> dict:
    return {
        "path": chunk.rel_path,
        "item_id": chunk.item_id,
        "symbol": chunk.qualified_name,
        "name": chunk.name,
        "kind": chunk.kind,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "window": chunk.window,
        "windows": chunk.windows,
        "item_start_line": chunk.item_start_line,
        "item_end_line": chunk.item_end_line,
        "doc": chunk.doc,
        "text": chunk.code,
    }
