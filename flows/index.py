"""The index flow: discover -> merkle diff -> remove stale -> prepare -> embed -> write -> commit.

    discover --> merkle diff --> read+parse+chunk --> embed --> write Tantivy + Qdrant --> commit (+ snapshot)
                    |                                               ^
                    +-- deleted/modified files: delete their chunks +
    force reindex or first run: clear stores, enter bulk mode ........ exit bulk mode (always)
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger

from tasks import dag, progress
from tasks.merkle import diff
from tasks.params import Directory, ForceReindex, IndexingMode, Mode
from tasks.session import IndexSession
from tasks.settings import CodebaseLayout, load_settings
from tasks.stats import IndexStats, StageClock


class NoRustFiles(ValueError):
    """The directory holds no indexable .rs file."""


@flow(name="index-codebase", validate_parameters=True)
def index_codebase(
    directory: Directory,
    force_reindex: ForceReindex = False,
    indexing_mode: Mode = IndexingMode.sequential,
) -> IndexStats:
    """Index a Rust code base: what changed since the last run, or everything with force_reindex."""
    started = time.perf_counter()
    settings = load_settings()
    clock = StageClock()
    root = Path(directory)

    progress.stage("discover")
    with clock.time("discover"):
        found = dag.discover_files(root, settings.max_file_bytes)
    if not found.files:
        raise NoRustFiles(f"no .rs files to index under {root} (after .gitignore rules); pass a Rust code base's root")

    layout = CodebaseLayout.for_root(root, settings)
    stats = IndexStats(
        directory=str(layout.root),
        codebase_id=layout.codebase_id,
        data_dir=str(layout.data_dir),
        mode=indexing_mode.value,
        force_reindex=force_reindex,
        files_total=len(found.files),
    )
    stats.skip(found.skipped)

    index = dag.open_index(layout, settings, force_reindex)
    try:
        bulk = dag.enter_bulk_mode(index) if index.fresh else None
        try:
            progress.stage("hash")
            with clock.time("hash"):
                snapshot, unreadable = dag.hash_files(found.files, index.previous)
            stats.skip(unreadable)
            changes = diff(index.previous, snapshot)
            stats.files_unchanged, stats.files_deleted = len(changes.unchanged), len(changes.deleted)
            clock.merge(dag.remove_files(index, changes.added + changes.modified + changes.deleted))

            to_index = [f for f in found.files if f.rel_path in set(changes.to_index)]
            failed = _index_sequential(index, to_index, settings.file_batch_size, clock, stats)

            index.manifest.last_run = _last_run(stats, time.perf_counter() - started)
            progress.stage("commit")
            with clock.time("commit"):
                dag.commit_index(index, snapshot.without(failed))
        finally:
            if bulk is not None:
                dag.exit_bulk_mode(index, bulk)
                if bulk.note:
                    stats.notes.append(bulk.note)
        stats.chunks_total = index.tantivy.count()
    finally:
        index.close()

    stats.stage_seconds = clock.rounded()
    stats.wall_seconds = round(time.perf_counter() - started, 3)
    get_run_logger().info(
        "%s: %d files (%d indexed, %d unchanged, %d deleted, %d skipped), %d chunks written, %d in the index",
        layout.root, stats.files_total, stats.files_indexed, stats.files_unchanged, stats.files_deleted,
        len(stats.files_skipped), stats.chunks_written, stats.chunks_total,
    )  # fmt: skip
    return stats


def _index_sequential(index: IndexSession, files, batch_size: int, clock: StageClock, stats: IndexStats) -> list[str]:
    """One batch after another through prepare -> embed -> write. Returns the files that failed."""
    progress.files_planned(len(files))
    failed: list[str] = []
    for start in range(0, len(files), batch_size):
        batch_files = files[start : start + batch_size]
        progress.stage("parse")
        prepared, seconds = dag.prepare_batch(index, batch_files)
        clock.merge(seconds)
        stats.skip(prepared.skipped)
        stats.warn(prepared.warnings)
        stats.withheld(prepared.secrets)
        failed += [issue.rel_path for issue in prepared.skipped]
        progress.chunks_planned(len(prepared.chunks))

        progress.stage("embed")
        embedded, seconds = dag.embed_batch(index, prepared)
        clock.merge(seconds)

        progress.stage("write")
        clock.merge(dag.write_batch(index, embedded))
        stats.files_indexed += len(prepared.indexed)
        stats.chunks_written += len(embedded.chunks)
        stats.chunks_embedded += len(embedded.chunks)
        progress.files_done(len(batch_files))
    return failed


def _last_run(stats: IndexStats, seconds: float) -> dict:
    return {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": stats.mode,
        "force_reindex": stats.force_reindex,
        "files_total": stats.files_total,
        "files_indexed": stats.files_indexed,
        "files_skipped": len(stats.files_skipped),
        "chunks_written": stats.chunks_written,
        "seconds": round(seconds, 1),
    }
