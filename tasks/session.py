"""One indexing run's open resources (model, chunker, both stores) and the operations on them.

Plain functions: the Prefect tasks in tasks/dag.py wrap them one to one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from tasks import progress
from tasks.bulk import recover_bulk_mode
from tasks.chunk import Chunker
from tasks.commit import Manifest, incompatibility, load_manifest
from tasks.embed import Embedder, ModelSpec, resolve_model
from tasks.merkle import Snapshot, load_snapshot, remove_snapshot
from tasks.qdrant_store import QdrantStore
from tasks.records import EmbeddedBatch, PreparedBatch
from tasks.settings import CodebaseLayout, Settings
from tasks.tantivy_store import TantivyStore


class IndexMismatch(RuntimeError):
    """The existing index cannot be updated in place; the message says to force a reindex."""


@dataclass(slots=True)
class IndexSession:
    layout: CodebaseLayout
    settings: Settings
    spec: ModelSpec
    embedder: Embedder
    chunker: Chunker
    tantivy: TantivyStore
    qdrant: QdrantStore
    manifest: Manifest
    previous: Snapshot | None  # None: everything is indexed from scratch
    fresh: bool  # the stores were empty or just cleared: nothing to delete first

    def close(self) -> None:
        self.tantivy.close()
        self.qdrant.close()


def load_embedder(settings: Settings) -> Embedder:
    spec = resolve_model(settings)
    return Embedder(spec, batch_size=settings.embed_batch_size, threads=settings.embed_threads)


def open_session(layout: CodebaseLayout, settings: Settings, force: bool, embedder: Embedder | None = None) -> IndexSession:
    """Load the model, open both stores, check the existing index can be updated."""
    embedder = embedder or load_embedder(settings)
    wanted = Manifest.for_run(layout, embedder.spec, embedder.dim, settings.qdrant_url)
    existing = load_manifest(layout.manifest_path)
    if existing is not None and not force:
        reason = incompatibility(existing, wanted)
        if reason:
            raise IndexMismatch(f"{reason}; rebuild it with `rci index {layout.root} --force`")
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    qdrant = QdrantStore.open(layout.qdrant_dir, layout.collection, settings.qdrant_url, api_key)
    try:
        tantivy = TantivyStore(layout.tantivy_dir)
    except BaseException:
        qdrant.close()
        raise
    chunker = Chunker(
        embedder.tokenizer(),
        max_tokens=min(settings.max_chunk_tokens, embedder.max_tokens),
        overlap_lines=settings.window_overlap_lines,
    )
    previous = None if force or existing is None else load_snapshot(layout.snapshot_path)
    session = IndexSession(layout, settings, embedder.spec, embedder, chunker, tantivy, qdrant, wanted, previous, False)
    try:
        recover_bulk_mode(qdrant, layout.bulk_state_path)
        if previous is None:
            # Force, first run, or a run that died before its first commit: start from empty stores.
            clear_index(session)
        else:
            qdrant.ensure_collection(embedder.dim)
    except BaseException:
        session.close()
        raise
    return session


def clear_index(session: IndexSession) -> None:
    """Empty both stores. The snapshot and manifest go first: a run that dies now starts over."""
    remove_snapshot(session.layout.snapshot_path)
    session.layout.manifest_path.unlink(missing_ok=True)
    session.tantivy.delete_all()
    session.qdrant.delete_collection()
    session.qdrant.ensure_collection(session.embedder.dim)
    session.previous = None
    session.fresh = True


def remove_files(session: IndexSession, rel_paths: Sequence[str]) -> dict[str, float]:
    """Take the chunks of these files out of both stores."""
    seconds: dict[str, float] = {}
    if session.fresh or not rel_paths:
        return seconds
    started = time.perf_counter()
    session.tantivy.delete_files(rel_paths)
    seconds["tantivy"] = time.perf_counter() - started
    started = time.perf_counter()
    session.qdrant.delete_files(rel_paths)
    seconds["qdrant"] = time.perf_counter() - started
    return seconds


def embed_batch(session: IndexSession, batch: PreparedBatch) -> tuple[EmbeddedBatch, dict[str, float]]:
    started = time.perf_counter()
    vectors = session.embedder.embed(
        [chunk.embed_text for chunk in batch.chunks],
        lengths=[chunk.n_tokens for chunk in batch.chunks],
        on_progress=progress.chunks_embedded,
    )
    return EmbeddedBatch(batch.chunks, vectors), {"embed": time.perf_counter() - started}


def write_batch(session: IndexSession, batch: EmbeddedBatch) -> dict[str, float]:
    """Add the batch to both stores. The Tantivy writer is only ever used from here and commit."""
    started = time.perf_counter()
    session.tantivy.add(batch.chunks)
    tantivy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    session.qdrant.upsert(batch.chunks, batch.vectors)
    return {"tantivy": tantivy_seconds, "qdrant": time.perf_counter() - started}

