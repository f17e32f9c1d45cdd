"""One indexing run's open resources (models, chunker, cache, both stores) and the operations on them.

Plain functions: the Prefect tasks in tasks/dag.py wrap them one to one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

from tasks import checkpoints, progress, stopping
from tasks.bulk import recover_bulk_mode
from tasks.chunk import Chunker, with_vectors
from tasks.commit import (
    Manifest, damaged, incompatibility, load_manifest, load_unfinished, rebuild_advice, save_unfinished,
)  # fmt: skip
from tasks.embed import Embedder, ModelSpec, resolve_model
from tasks.embed_cache import EmbeddingCache
from tasks.merkle import Snapshot, load_snapshot
from tasks.prepare import prepare_batch
from tasks.recommend import Plan, recommend
from tasks.records import EmbeddedBatch, PreparedBatch, SourceFile
from tasks.resources import return_freed_memory
from tasks.settings import CodebaseLayout, Settings
from tasks.stats import BatchOutcome, FileReason
from tasks.vector_store import VectorStore, open_for_run, remove_old_layout


class IndexMismatch(RuntimeError):
    """The existing index cannot be updated in place; the message says to force a reindex."""


class IndexSession:
    """Open resources of one run. A plain class, not a dataclass, so Prefect passes it to
    tasks as it is instead of walking its fields (see records.PreparedBatch)."""

    def __init__(
        self,
        layout: CodebaseLayout,
        settings: Settings,
        plan: Plan,
        spec: ModelSpec,
        embedders: list[Embedder],
        chunker: Chunker,
        cache: EmbeddingCache,
        tantivy,
        vectors: VectorStore,
        manifest: Manifest,
        previous: Snapshot | None,  # None: everything is indexed from scratch
    ):
        self.layout = layout
        self.settings = settings
        self.plan = plan
        self.spec = spec
        self.embedders = embedders
        self.dim = embedders[0].dim
        self.chunker = chunker
        self.cache = cache
        self.tantivy = tantivy
        self.vectors = vectors
        self.manifest = manifest
        self.previous = previous
        self.fresh = previous is None  # the stores are empty or just cleared: nothing to delete first
        self.notes: list[str] = []  # for the run's summary
        self._idle: queue.Queue = queue.Queue()
        for model in embedders:
            self._idle.put(model)
        self._parse_pool: ProcessPoolExecutor | None = None

    @contextlib.contextmanager
    def embedder(self) -> Iterator[Embedder]:
        """An embedder no other thread is using (one per worker)."""
        model = self._idle.get()
        try:
            yield model
        finally:
            self._idle.put(model)

    def worker_pids(self) -> list[int]:
        pool = self._parse_pool
        return list(getattr(pool, "_processes", None) or {}) if pool is not None else []

    def release_batch_resources(self) -> None:
        """Free what only the batches used (parse workers, models and their ONNX arenas) before
        the commit, whose Tantivy merge maps the index's files into memory: the large corpus's
        run ended 541 MB high with them held (merge +113 MB on 359 MB)."""
        self._stop_parse_pool()
        while not self._idle.empty():
            self._idle.get_nowait()
        self.embedders.clear()
        return_freed_memory()  # a model's ONNX arena: 150 MB after a batch of 64 long texts

    def _stop_parse_pool(self) -> None:
        if self._parse_pool is not None:
            self._parse_pool.shutdown(cancel_futures=True)
            self._parse_pool = None

    def close(self) -> None:
        self._stop_parse_pool()
        self.cache.close()
        self.tantivy.close()
        self.vectors.close()


def plan_for_run(settings: Settings, files: int, total_bytes: int, mode: str | None) -> Plan:
    """recommend()'s plan, with the user's explicit settings on top."""
    plan = recommend(files, total_bytes, mode=None if mode in (None, "auto") else mode)
    overrides = {}
    if settings.file_batch_size:
        overrides["file_batch_size"] = settings.file_batch_size
    if settings.embed_threads:
        overrides["embed_threads"] = settings.embed_threads
    if settings.parse_processes is not None:
        overrides["parse_processes"] = settings.parse_processes
    return dataclasses.replace(plan, **overrides)


def load_embedder(settings: Settings, threads: int | None = None, lean: bool = True) -> Embedder:
    return Embedder(
        resolve_model(settings),
        batch_tokens=settings.embed_batch_tokens,
        threads=threads or settings.embed_threads,
        device=settings.embed_device,
        lean=lean,
    )


def open_session(
    layout: CodebaseLayout, settings: Settings, plan: Plan, force: bool, reembed: bool = False
) -> IndexSession:
    """Load the model(s), open the cache and both stores, check the existing index can be updated.

    A run starts over (empty stores, everything indexed) when forced, on the first run, after
    a run that died before its first commit, and when the vector store cannot be opened."""
    from tasks.tantivy_store import TantivyStore

    spec = resolve_model(settings)
    existing = load_manifest(layout.manifest_path)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    embedders = [load_embedder(settings, plan.embed_threads, lean=not plan.fast_session) for _ in range(max(plan.workers, 1))]
    dim = embedders[0].dim
    wanted = Manifest.for_run(layout, spec, dim, settings.qdrant_url)
    if existing is not None and not force:
        reason = incompatibility(existing, wanted)
        if reason:
            raise IndexMismatch(f"{reason}; {rebuild_advice(layout)}")
    unfinished = load_unfinished(layout)
    previous = None if force or existing is None or unfinished.start_over else load_snapshot(layout.snapshot_path)
    notes = []
    if not force:
        for path in (layout.manifest_path, layout.snapshot_path):
            if reason := damaged(path):
                notes.append(f"{path.name} was damaged ({reason}); rebuilt the index from the embedding cache")
    if previous is None:
        save_unfinished(layout, start_over=True)  # a run that dies from here on starts over
        remove_old_layout(layout.data_dir)
    try:
        vectors = open_for_run(layout, settings, dim, start_over=previous is None)
    except (OSError, RuntimeError) as error:
        if previous is None or "in use by" in str(error):
            raise
        # A damaged store (a disk that filled, a file removed by hand): rebuild both, from the cache.
        notes.append(f"the vector store could not be opened ({' '.join(str(error).split())[:200]}); rebuilt the index")
        previous = None
        save_unfinished(layout, start_over=True)
        vectors = open_for_run(layout, settings, dim, start_over=True)
    try:
        if previous is not None:
            previous = previous.doubting(unfinished.files)
        tantivy = TantivyStore(
            layout.tantivy_dir, plan.tantivy_heap_bytes, plan.tantivy_threads, starting_over=previous is None
        )
    except BaseException:
        vectors.close()
        raise
    tokenizer = embedders[0].tokenizer()
    chunker = Chunker(
        tokenizer,
        max_tokens=min(settings.max_chunk_tokens, embedders[0].max_tokens),
        overlap_lines=settings.window_overlap_lines,
    )
    cache = open_cache(layout, spec.model_id, notes)
    session = IndexSession(layout, settings, plan, spec, embedders, chunker, cache, tantivy, vectors, wanted, previous)
    session.notes += notes
    try:
        if reembed:
            cache.clear()
        recover_bulk_mode(vectors, layout.bulk_state_path)
        if previous is None:
            tantivy.delete_all()  # the vector store was created empty
        if plan.parse_processes > 0:
            session._parse_pool = ProcessPoolExecutor(
                max_workers=plan.parse_processes,
                initializer=_init_parse_worker,
                initargs=(tokenizer.to_str(), chunker.max_tokens, chunker.overlap_lines),
            )
    except BaseException:
        session.close()
        raise
    return session


def open_cache(layout: CodebaseLayout, model_id: str, notes: list[str]) -> EmbeddingCache:
    """The embedding cache; a damaged one is set aside (it is only a cache) and a new one started."""
    import sqlite3

    try:
        return EmbeddingCache(layout.cache_path, model_id)
    except sqlite3.DatabaseError as error:
        aside = layout.cache_path.with_name(layout.cache_path.name + ".damaged")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{layout.cache_path}{suffix}")
            if source.exists():
                source.replace(Path(f"{aside}{suffix}"))
        notes.append(
            f"the embedding cache was damaged ({error}); moved it to {aside.name} and started a new one: "
            "text not in it is embedded again"
        )
        return EmbeddingCache(layout.cache_path, model_id)


def remove_files(session: IndexSession, rel_paths: Sequence[str]) -> dict[str, float]:
    """Take the chunks of these files out of both stores."""
    seconds: dict[str, float] = {}
    if session.fresh or not rel_paths:
        return seconds
    started = time.perf_counter()
    session.tantivy.delete_files(rel_paths)
    seconds["tantivy"] = time.perf_counter() - started
    started = time.perf_counter()
    session.vectors.delete_files(rel_paths)
    seconds["qdrant"] = time.perf_counter() - started
    return seconds


# --- read + parse + chunk, in this process or in worker processes ---------------------------

_worker_chunker: Chunker | None = None


def _init_parse_worker(tokenizer_json: str, max_tokens: int, overlap_lines: int) -> None:
    from tokenizers import Tokenizer

    from tasks.resources import exit_with_parent

    exit_with_parent()
    global _worker_chunker
    _worker_chunker = Chunker(Tokenizer.from_str(tokenizer_json), max_tokens, overlap_lines)


def _prepare_in_worker(files: Sequence[SourceFile], root: Path) -> PreparedBatch:
    return prepare_batch(files, root, _worker_chunker)


def prepare(session: IndexSession, files: Sequence[SourceFile]) -> PreparedBatch:
    """Read, parse, chunk and scan files: in a worker process when the plan has them (tree-sitter
    holds the GIL, so threads would parse one file at a time)."""
    if session._parse_pool is not None:
        batch = session._parse_pool.submit(_prepare_in_worker, list(files), session.layout.root).result()
    else:
        batch = prepare_batch(files, session.layout.root, session.chunker)
    stopping.check()
    progress.chunks_planned(len(with_vectors(batch.chunks)))
    return batch


# --- embed, through the cache ------------------------------------------------------------------


def embed_batch(session: IndexSession, batch: PreparedBatch) -> EmbeddedBatch:
    """Make sure the vector of every chunk that has one is in the cache: texts embedded before are
    found there, the others are embedded (each distinct text once) and added."""
    started = time.perf_counter()
    chunks = with_vectors(batch.chunks)
    keys = [session.cache.key(chunk.embed_text) for chunk in chunks]
    known = session.cache.known(keys)
    missing: dict[bytes, int] = {}  # key -> the first chunk with that text
    for index, key in enumerate(keys):
        if not known[index] and key not in missing:
            missing[key] = index
    progress.chunks_embedded(len(chunks) - len(missing))  # cache hits and repeated texts
    lookup_seconds = time.perf_counter() - started

    embed_seconds = 0.0
    if missing:
        texts = [chunks[i].embed_text for i in missing.values()]
        lengths = [chunks[i].n_tokens for i in missing.values()]
        with session.embedder() as model:  # waiting for a free model is not embedding
            checkpoints.reached("embed")
            started = time.perf_counter()
            vectors = model.embed(texts, lengths, on_progress=progress.chunks_embedded)
            embed_seconds = time.perf_counter() - started
        session.cache.put_many(zip(missing, vectors))
    return EmbeddedBatch(
        batch, keys, embedded=len(missing), reused=len(chunks) - len(missing),
        tokens=sum(chunks[i].n_tokens for i in missing.values()), seconds={"cache": lookup_seconds, "embed": embed_seconds},
    )  # fmt: skip


# --- write: the single writer ------------------------------------------------------------------

WRITE_ROWS = 1024  # vectors read from the cache per Qdrant write: 1.5 MB at 384 dimensions


def write_batch(session: IndexSession, batch: EmbeddedBatch) -> BatchOutcome:
    """Add the batch to both stores. The Tantivy writer is only ever used from here and commit."""
    import numpy as np

    started = time.perf_counter()
    session.tantivy.add(batch.chunks)
    seconds = {"tantivy": time.perf_counter() - started, "cache": 0.0, "qdrant": 0.0, "optimize": 0.0}
    chunks = with_vectors(batch.chunks)  # batch.keys' rows
    for start in range(0, len(chunks), WRITE_ROWS):
        stopping.check()
        keys = batch.keys[start : start + WRITE_ROWS]
        started = time.perf_counter()
        vectors = np.empty((len(keys), session.dim), dtype=np.float32)
        if not session.cache.read_into(keys, vectors).all():
            raise RuntimeError(f"the embedding cache {session.cache.path} lost vectors during the run; run again")
        seconds["cache"] += time.perf_counter() - started
        started, building = time.perf_counter(), session.vectors.optimize_seconds
        session.vectors.upsert(chunks[start : start + WRITE_ROWS], vectors)
        built = session.vectors.optimize_seconds - building  # a segment filled up: its graph
        seconds["qdrant"] += time.perf_counter() - started - built
        seconds["optimize"] += built
    progress.files_done(len(batch.prepared.files))
    checkpoints.reached("write")
    return outcome_of(batch, seconds)


def outcome_of(batch: EmbeddedBatch, write_seconds: dict[str, float]) -> BatchOutcome:
    prepared = batch.prepared
    seconds = dict(prepared.seconds)
    for part in (batch.seconds, write_seconds):
        for stage, value in part.items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    return BatchOutcome(
        files=len(prepared.files),
        indexed=prepared.indexed,
        skipped=[FileReason(path=i.rel_path, reason=i.reason) for i in prepared.skipped],
        warnings=[FileReason(path=i.rel_path, reason=i.reason) for i in prepared.warnings],
        secrets=[str(f) for f in prepared.secrets],
        failed=[(i.rel_path, i.reason, i.retry) for i in prepared.skipped],
        chunks_written=len(prepared.chunks),
        chunks_embedded=batch.embedded,
        chunks_reused=batch.reused,
        tokens_embedded=batch.tokens,
        seconds=seconds,
    )


def index_one_by_one(session: IndexSession, files: Sequence[SourceFile]) -> BatchOutcome:
    """Sequential mode's unit of work: each file through every stage before the next file."""
    total: BatchOutcome | None = None
    for source in files:
        outcome = write_batch(session, embed_batch(session, prepare(session, [source])))
        total = outcome if total is None else merge_outcomes(total, outcome)
    return total or BatchOutcome(files=0, indexed=[])


def merge_outcomes(a: BatchOutcome, b: BatchOutcome) -> BatchOutcome:
    seconds = dict(a.seconds)
    for stage, value in b.seconds.items():
        seconds[stage] = seconds.get(stage, 0.0) + value
    return BatchOutcome(
        files=a.files + b.files,
        indexed=a.indexed + b.indexed,
        skipped=a.skipped + b.skipped,
        warnings=a.warnings + b.warnings,
        secrets=a.secrets + b.secrets,
        failed=a.failed + b.failed,
        chunks_written=a.chunks_written + b.chunks_written,
        chunks_embedded=a.chunks_embedded + b.chunks_embedded,
        chunks_reused=a.chunks_reused + b.chunks_reused,
        tokens_embedded=a.tokens_embedded + b.tokens_embedded,
        seconds=seconds,
    )
