"""The embedded vector store: one Qdrant Edge shard per code base, in `<data dir>/qdrant-edge/`.

Qdrant Edge is Qdrant's engine in this process: segments on disk (vectors memory-mapped,
payload and its keyword indexes on disk), a write-ahead log, and HNSW graphs built only when
`optimize()` is called, never in the background. Points go into one open segment, searched
exactly; when it holds SEGMENT_KB of vectors it is sealed and given its graph, once, and a new
one opens; segments are never merged. Bulk mode (a first or forced load) builds the last
graph when the load ends, in the flow's `finally`; a run that died first leaves the bulk-mode
record, and the next run builds it. Whoever opens the shard holds its lease
(tasks/store_lease.py).

Why not one graph build for the whole load at its end, as a server's bulk mode does: the
graphs of the large corpus (245k points, 12 segments) built by one optimize() call peaked at
844 MB of RSS, since everything the build touches stays mapped until the shard is closed;
built a segment at a time, with the shard reopened in between, a build costs what one
segment costs (tests/benchmarks/README.md, "Qdrant Edge").
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HnswIndexConfig,
    KeywordIndexParams,
    MatchAny,
    Memory,
    Point,
    QuantizationSearchParams,
    Query,
    QueryRequest,
    ScalarQuantizationConfig,
    ScalarType,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)

from tasks.disk_space import reader_can_open
from tasks.records import Chunk
from tasks.resources import return_freed_memory
from tasks.store_lease import StoreLease, Watcher
from tasks.vector_store import VectorHit, VectorsUnavailable, chunked, payload_of

UPSERT_POINTS = 1024  # points per update call
SCROLL_POINTS = 10_000
# The open segment is sealed and given its graph when it holds this much vector data (10k points
# of 384 floats): a graph build then costs what one segment costs (large corpus, warm force
# reindex, peak RSS: 577 MB with segments of 30 MB, 515 with 15 MB, 496 with 7.5 MB, whose
# 48 segments made opening the shard take 0.5 s instead of 0.2 s).
SEGMENT_KB = 15_000
SEGMENTS = 1_000  # Qdrant merges segments while there are more than this many: in practice never
HNSW_M = 16
EF_CONSTRUCT = 100
# HNSW search breadth: the graph is searched with ef = max(SEARCH_EF, limit).
SEARCH_EF = 128
# A writer keeps what it wrote mapped (the write-ahead log's and the open segment's pages) until
# it closes the shard: it closes and reopens it after this many points (0.15 s on 245k points),
# sealing the open segment first once it is full.
REOPEN_POINTS = 5_120
# A reader that opens the shard for one query searches every point up to this many: its first
# graph search pays for loading the graphs (medium corpus, 31k points: 0.21 s, exact 0.05 s).
ONE_OFF_EXACT_POINTS = 50_000


def edge_config(dim: int) -> EdgeConfig:
    """Vectors stay on disk (memory-mapped, read on demand); searches walk each segment's graph
    over int8 copies of the vectors, then rescore the best candidates with the originals."""
    return EdgeConfig(
        vectors=EdgeVectorParams(size=dim, distance=Distance.Cosine, memory=Memory.Cold),
        payload_memory=Memory.Cold,
        id_tracker_memory=Memory.Cold,
        quantization_config=ScalarQuantizationConfig(ScalarType.Int8, quantile=0.99, memory=QUANTIZED_MEMORY),
        hnsw_config=HnswIndexConfig(
            m=HNSW_M, ef_construct=EF_CONSTRUCT, full_scan_threshold=SEGMENT_KB // 3, memory=Memory.Cached
        ),
        optimizers=EdgeOptimizersConfig(
            indexing_threshold=SEGMENT_KB, max_segment_size=2 * SEGMENT_KB, default_segment_number=SEGMENTS
        ),
    )


QUANTIZED_MEMORY = Memory.Cold
# Keyword payload indexes on disk: kept in memory, the large corpus's (245k points) took 45 MB
# and made opening the shard take 0.9 s instead of 0.15 s.
ON_DISK_KEYWORD = KeywordIndexParams(on_disk=True, memory=Memory.Cold)


class EdgeStore:
    location = "embedded"

    def __init__(self, path: Path, shard: EdgeShard, lease: StoreLease | None):
        self.path = Path(path)
        self._shard = shard
        self.lease = lease
        self.exact = False  # search every point (set for one-off readers of a small store)
        self._written = 0  # points upserted since the shard was (re)opened
        self._changed = False  # anything written or deleted since the shard was opened
        self.optimize_seconds = 0.0  # spent sealing segments and building graphs (a stage of its own)

    @classmethod
    def open(cls, path: Path, dim: int | None = None, start_over: bool = False, lease: StoreLease | None = None) -> EdgeStore:
        """The shard at `path`; with `dim`, created when missing or when starting over."""
        path = Path(path)
        if start_over:
            shutil.rmtree(path, ignore_errors=True)
        if not (path / "edge_config.json").is_file():
            if dim is None:
                raise FileNotFoundError(f"no vector store at {path}; index the code base first")
            return cls(path, cls._create(path, dim), lease)
        shard = EdgeShard.load(str(path))
        store = cls(path, shard, lease)
        if dim is not None and store.dim != dim:
            store.close()
            raise RuntimeError(
                f"the vector store holds {store.dim}-dimension vectors but the model makes {dim}; rebuild it with --force"
            )
        return store

    @staticmethod
    def _create(path: Path, dim: int) -> EdgeShard:
        shutil.rmtree(path, ignore_errors=True)  # a creation that died halfway
        shard = EdgeShard.create(str(path), edge_config(dim))
        for field in ("path", "kind"):  # delete by file; search filters
            shard.update(UpdateOperation.create_field_index(field, ON_DISK_KEYWORD))
        shard.flush()
        return shard

    @property
    def dim(self) -> int:
        return stored_dim(self.path)

    def _optimize(self) -> None:
        """Seal a full open segment and build its graph (and rebuild segments with many deletions),
        then reopen the shard, so what the build touched is unmapped. optimize() holds Python's GIL
        while it runs: seconds per segment of this size (the threads of the run wait that long)."""
        started = time.perf_counter()
        self._shard.optimize()
        self.optimize_seconds += time.perf_counter() - started
        self._reopen()

    def _reopen(self) -> None:
        self._shard.flush()
        self._shard.close()
        self._shard = None
        return_freed_memory()  # what the shard held, back to the system
        self._shard = EdgeShard.load(str(self.path))
        self._written = 0

    # --- writing ------------------------------------------------------------------------

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        start = 0
        while start < len(chunks):
            part = chunks[start : start + min(UPSERT_POINTS, REOPEN_POINTS - self._written)]
            rows = vectors[start : start + len(part)].tolist()
            points = [Point(chunk.id, row, payload_of(chunk)) for chunk, row in zip(part, rows)]
            self._shard.update(UpdateOperation.upsert_points(points))
            start += len(part)
            self._written += len(part)
            self._changed = True
            if self._written >= REOPEN_POINTS:
                self._optimize() if self.open_segment_full() else self._reopen()

    def delete_files(self, rel_paths: Sequence[str]) -> None:
        for paths in chunked(rel_paths):
            self._shard.update(UpdateOperation.delete_points_by_filter(_path_filter(paths)))
            self._changed = True

    def pause_indexing(self, record) -> dict:
        record({})  # nothing to pause: no graph is built until a segment is full (upsert)
        return {}

    def resume_indexing(self, paused: dict) -> None:
        self._optimize()

    def keep_searchable(self) -> None:
        """After an incremental run: a full open segment is sealed and given its graph, segments
        with many deletions are rebuilt; segments are small, so this takes seconds at most.
        Below that, the open segment is searched exactly, in milliseconds."""
        if self._changed:
            self._optimize()

    def open_segment_full(self) -> bool:
        info = self._shard.info()
        unsealed = info.points_count - info.indexed_vectors_count
        return unsealed * self.dim * 4 >= SEGMENT_KB * 1024

    def commit(self) -> None:
        self._shard.flush()

    def graphs_built(self) -> int:
        """Segments that have an HNSW graph (from their own segment.json)."""
        count = 0
        for segment in (self.path / "segments").glob("*/segment.json"):
            data = json.loads(segment.read_text(encoding="utf-8"))
            index = data["config"]["vector_data"][""]["index"]
            count += index.get("type") == "hnsw" and index.get("options", {}).get("m", 0) > 0
        return count

    # --- reading ------------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        limit: int,
        kinds: Sequence[str] = (),
        paths: Sequence[str] | None = None,
        exact: bool = False,
    ) -> list[VectorHit]:
        """`exact`: every point compared (what the graphs approximate; the benchmarks compare)."""
        conditions = []
        if kinds:
            conditions.append(FieldCondition("kind", match=MatchAny(list(kinds))))
        if paths is not None:
            conditions.append(FieldCondition("path", match=MatchAny(list(paths))))
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(np.asarray(vector, dtype=np.float32).tolist()),
            filter=Filter(must=conditions) if conditions else None,
            with_payload=False,
            params=SearchParams(exact=True) if exact or self.exact else SearchParams(hnsw_ef=max(SEARCH_EF, limit), quantization=RESCORE),
        )
        return [VectorHit(str(point.id), float(point.score)) for point in self._shard.query(request)]

    def ids(self) -> set[str]:
        found: set[str] = set()
        offset = None
        while True:
            records, offset = self._shard.scroll(
                ScrollRequest(offset=offset, limit=SCROLL_POINTS, with_payload=False, with_vector=False)
            )
            found.update(str(record.id) for record in records)
            if offset is None:
                return found

    def count(self) -> int:
        return int(self._shard.count(CountRequest(exact=True)))

    def approximate_count(self) -> int:
        """From the segments' own counts, without reading any point."""
        return int(self._shard.info().points_count)

    def vector_of(self, point_id: str) -> np.ndarray | None:
        records = self._shard.retrieve([point_id], with_payload=False, with_vector=True)
        return np.asarray(records[0].vector, dtype=np.float32) if records else None

    def points(self, rel_path: str | None = None, with_vectors: bool = False) -> list[dict]:
        """Every point (or one file's) as its id, payload and, if asked, vector (for tests)."""
        found: list[dict] = []
        offset = None
        while True:
            records, offset = self._shard.scroll(
                ScrollRequest(
                    offset=offset, limit=SCROLL_POINTS, with_payload=True, with_vector=with_vectors,
                    filter=_path_filter([rel_path]) if rel_path is not None else None,
                )  # fmt: skip
            )
            for record in records:
                point = {"id": str(record.id), **(record.payload or {})}
                if with_vectors:
                    point["vector"] = record.vector
                found.append(point)
            if offset is None:
                return found

    def close(self) -> None:
        try:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
                return_freed_memory()
        finally:
            if self.lease is not None:
                self.lease.release()


def stored_dim(path: Path) -> int:
    config = json.loads((Path(path) / "edge_config.json").read_text(encoding="utf-8"))
    return int(config["vectors"][""]["size"])


# How a graph search uses the int8 copies; tests/benchmarks/bench_search.py compares the choices.
RESCORE = QuantizationSearchParams(rescore=True, oversampling=2.0)


def _path_filter(paths: Sequence[str]) -> Filter:
    return Filter(must=[FieldCondition("path", match=MatchAny(list(paths)))])


class WarmEdgeReader:
    """A long-lived reader's view of the shard (a warm Searcher, the MCP server): open between
    queries, let go as soon as another process waits for it, opened again on the next query
    once nobody does (so it always reads what the last index run left)."""

    location = "embedded"

    def __init__(self, data_dir: Path, path: Path, wait_seconds: float = 5.0):
        self._data_dir = Path(data_dir)
        self._path = Path(path)
        self._wait = wait_seconds
        self._lock = threading.RLock()
        self._store: EdgeStore | None = None
        self._lease = StoreLease(self._data_dir, "warm search")
        self._watcher = Watcher(self._lease, self.let_go)
        self.opened = 0  # times the shard was (re)opened: tests and benchmarks read it

    def _open(self) -> EdgeStore:
        if self._store is None:
            if why_not := reader_can_open(self._data_dir):
                raise VectorsUnavailable(why_not)
            self._lease.take_unless_indexing(self._wait)
            try:
                self._store = EdgeStore.open(self._path)
            except BaseException:
                self._lease.release()
                raise
            self._lease.keep()
            self.opened += 1
        return self._store

    def search(self, vector, limit, kinds=(), paths=None) -> list[VectorHit]:
        return self.call(lambda store: store.search(vector, limit, kinds, paths))

    def call(self, what):
        """`what(store)` with the shard open (opened again if it was let go)."""
        with self._lock:
            return what(self._open())

    def let_go(self) -> None:
        with self._lock:
            if self._store is not None:
                store, self._store = self._store, None
                store.lease = None
                store.close()
            self._lease.release()

    @property
    def holding(self) -> bool:
        return self._store is not None

    def close(self) -> None:
        self._watcher.stop()
        self.let_go()
