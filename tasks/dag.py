"""The DAG's nodes: thin Prefect tasks over the plain functions in tasks/.

Each task adds a name, retries where a failure can be transient (hashing files, bulk mode,
commit) and nothing else. Results stay in memory (no caching, no persistence): they hold
open stores and arrays, and an index run is not worth resuming from a cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import bulk, commit, discover, merkle, session
from tasks.records import EmbeddedBatch, FileIssue, PreparedBatch, SourceFile
from tasks.stats import BatchOutcome

RETRIES = 3
BACKOFF = [1, 2, 4]  # seconds before retry 1, 2, 3

node = task(cache_policy=NO_CACHE, persist_result=False)
retried = task(cache_policy=NO_CACHE, persist_result=False, retries=RETRIES, retry_delay_seconds=BACKOFF)


@node(name="discover")
def discover_files(root: Path, max_file_bytes: int) -> discover.Discovery:
    return discover.discover(root, max_file_bytes)


@node(name="open-index")
def open_index(layout, settings, plan, force: bool, reembed: bool) -> session.IndexSession:
    return session.open_session(layout, settings, plan, force, reembed)


@retried(name="merkle")
def hash_files(
    files: Sequence[SourceFile], previous: merkle.Snapshot | None, workers: int
) -> tuple[merkle.Snapshot, list[FileIssue]]:
    return merkle.build_snapshot(files, previous, workers)


@retried(name="bulk-enter")
def enter_bulk_mode(index: session.IndexSession) -> bulk.BulkState:
    return bulk.enter_bulk_mode(index.vectors, index.layout.bulk_state_path)


@retried(name="bulk-exit")
def exit_bulk_mode(index: session.IndexSession, state: bulk.BulkState) -> None:
    bulk.exit_bulk_mode(index.vectors, state, index.layout.bulk_state_path)


@node(name="optimize")
def keep_searchable(index: session.IndexSession) -> None:
    index.vectors.keep_searchable()


@node(name="remove-files")
def remove_files(index: session.IndexSession, rel_paths: Sequence[str]) -> dict[str, float]:
    return session.remove_files(index, rel_paths)


@node(name="index-one-by-one")
def index_one_by_one(index: session.IndexSession, files: Sequence[SourceFile]) -> BatchOutcome:
    return session.index_one_by_one(index, files)


@node(name="prepare-batch")
def prepare_batch(index: session.IndexSession, files: Sequence[SourceFile]) -> PreparedBatch:
    return session.prepare(index, files)


@node(name="embed-batch")
def embed_batch(index: session.IndexSession, batch: PreparedBatch) -> EmbeddedBatch:
    return session.embed_batch(index, batch)


@node(name="prepare-and-embed")
def prepare_and_embed(index: session.IndexSession, files: Sequence[SourceFile]) -> EmbeddedBatch:
    return session.embed_batch(index, session.prepare(index, files))


@node(name="write-batch")
def write_batch(index: session.IndexSession, batch: EmbeddedBatch) -> BatchOutcome:
    return session.write_batch(index, batch)


@retried(name="commit")
def commit_index(index: session.IndexSession, snapshot: merkle.Snapshot, prune_cache: bool) -> None:
    commit.commit_index(index.tantivy, index.vectors, index.layout, index.manifest, snapshot)
    if prune_cache:
        index.cache.prune_unused()
