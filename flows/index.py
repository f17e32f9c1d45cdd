"""The index flow: discover -> merkle diff -> remove stale -> prepare -> embed -> write -> commit.

    discover --> merkle diff --> read+parse+chunk --> embed --> write Tantivy + Qdrant --> commit (+ snapshot)
                    |                                   (cache)      ^
                    +-- deleted/modified files: delete their chunks -+
    force reindex or first run: clear stores, enter bulk mode ........ exit bulk mode (always)

How batches move through read/parse/chunk, embed and write is the mode (flows/modes.py).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.modes import run_mode
from tasks import dag, progress
from tasks.merkle import diff
from tasks.params import Directory, ForceReembed, ForceReindex, IndexingMode, Mode
from tasks.resources import PeakRss
from tasks.session import plan_for_run
from tasks.settings import CodebaseLayout, load_settings
from tasks.stats import IndexStats, StageClock


class NoRustFiles(ValueError):
    """The directory holds no indexable .rs file."""


# Threads for submitted tasks. The modes bound what runs at once (pipeline: 3 tasks per batch
# in flight; parallel: 2 per worker); a task waiting for its upstream holds a thread.
TASK_THREADS = 16


@flow(name="index-codebase", validate_parameters=True, task_runner=ThreadPoolTaskRunner(max_workers=TASK_THREADS))
def index_codebase(
    directory: Directory,
    force_reindex: ForceReindex = False,
    indexing_mode: Mode = IndexingMode.auto,
    force_reembed: ForceReembed = False,
) -> IndexStats:
    """Index a Rust code base: what changed since the last run, or everything with force_reindex."""
    started = time.perf_counter()
    settings = load_settings()
    clock = StageClock()
    root = Path(directory)

    with PeakRss() as rss:
        progress.stage("discover")
        with clock.time("discover"):
            found = dag.discover_files(root, settings.max_file_bytes)
        if not found.files:
            raise NoRustFiles(f"no .rs files to index under {root} (after .gitignore rules); pass a Rust code base's root")

        layout = CodebaseLayout.for_root(root, settings)
        plan = plan_for_run(settings, len(found.files), sum(f.size for f in found.files), indexing_mode.value)
        stats = IndexStats(
            directory=str(layout.root),
            codebase_id=layout.codebase_id,
            data_dir=str(layout.data_dir),
            mode=plan.mode,
            force_reindex=force_reindex or force_reembed,
            files_total=len(found.files),
            plan=plan.describe(),
        )
        stats.skip(found.skipped)

        index = dag.open_index(layout, settings, plan, force_reindex or force_reembed, force_reembed)
        rss.watch(index.worker_pids)
        try:
            bulk = dag.enter_bulk_mode(index) if index.fresh else None
            try:
                progress.stage("hash")
                with clock.time("hash"):
                    current, unreadable = dag.hash_files(found.files, index.previous, plan.hash_workers)
                stats.skip(unreadable)
                changes = diff(index.previous, current)
                stats.files_unchanged, stats.files_deleted = len(changes.unchanged), len(changes.deleted)
                stats.skip(changes.still_failing)
                clock.merge(dag.remove_files(index, changes.to_remove))

                to_index = set(changes.to_index)
                failures = run_mode(index, [f for f in found.files if f.rel_path in to_index], stats, clock)

                index.manifest.last_run = _last_run(stats, time.perf_counter() - started)
                progress.stage("commit")
                with clock.time("commit"):
                    snapshot = current.after_run(failures + changes.still_failing)
                    dag.commit_index(index, snapshot, prune_cache=index.fresh)
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
    stats.peak_rss_mb = rss.peak_mb
    get_run_logger().info(
        "%s (%s): %d files (%d indexed, %d unchanged, %d deleted, %d skipped), %d chunks written "
        "(%d embedded, %d from cache), %d in the index, peak RSS %.0f MB",
        layout.root, plan.mode, stats.files_total, stats.files_indexed, stats.files_unchanged, stats.files_deleted,
        len(stats.files_skipped), stats.chunks_written, stats.chunks_embedded, stats.chunks_reused,
        stats.chunks_total, stats.peak_rss_mb,
    )  # fmt: skip
    return stats


def _last_run(stats: IndexStats, seconds: float) -> dict:
    return {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": stats.mode,
        "force_reindex": stats.force_reindex,
        "files_total": stats.files_total,
        "files_indexed": stats.files_indexed,
        "files_skipped": len(stats.files_skipped),
        "chunks_written": stats.chunks_written,
        "chunks_embedded": stats.chunks_embedded,
        "seconds": round(seconds, 1),
    }

