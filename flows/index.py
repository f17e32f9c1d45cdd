"""The index flow: discover -> merkle diff -> remove stale -> prepare -> embed -> write -> commit.

    discover --> merkle diff --> read+parse+chunk --> embed --> write Tantivy + Qdrant --> commit (+ snapshot)
                    |                                   (cache)      ^
                    +-- deleted/modified files: delete their chunks -+
    force reindex or first run: clear stores, enter bulk mode ........ exit bulk mode (always)

One run per code base at a time (a lock in the data folder, then a Prefect concurrency limit).
How batches move through read/parse/chunk, embed and write is the mode (flows/modes.py).
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.modes import run_mode
from flows.run_artifacts import progress_in_the_ui, publish_summary
from tasks import dag, progress, stopping
from tasks.bulk import recover_bulk_mode
from tasks.commit import save_unfinished
from tasks.disk_space import DiskFull, disk_full_error, folder_bytes, is_disk_full, require_space, run_needs
from tasks.discover import Discovery
from tasks.lock import codebase_lock, describe as describe_holder
from tasks.merkle import diff
from tasks.params import Directory, ForceReembed, ForceReindex, IndexingMode, Mode, documented_parameters
from tasks.resources import PeakRss, tune_malloc
from tasks.session import IndexSession, plan_for_run
from tasks.settings import CodebaseLayout, Settings, load_settings
from tasks.stats import IndexStats, StageClock
from tasks.vector_store import open_for_run

tune_malloc()  # before the run starts its threads (tasks/resources.py says why)

# Threads for submitted tasks. The modes bound what runs at once (pipeline: 3 tasks per batch
# in flight; parallel: 2 per worker); a task waiting for its upstream holds a thread.
TASK_RUNNER = ThreadPoolTaskRunner(max_workers=16)


def restore_bulk_mode(flow, run, state) -> None:
    """on_cancellation / on_crashed: a run killed in bulk mode leaves its record; restore now.
    Not for a run being stopped by a signal: it must be gone in seconds, the next run restores."""
    directory = (run.parameters or {}).get("directory")
    if not directory or stopping.requested():
        return
    settings = load_settings()
    layout = CodebaseLayout.for_root(Path(directory), settings)
    if not layout.bulk_state_path.exists():
        return
    store = open_for_run(layout, settings)
    try:
        recover_bulk_mode(store, layout.bulk_state_path)
    finally:
        store.close()


HOOKS = {"on_cancellation": [restore_bulk_mode], "on_crashed": [restore_bulk_mode]}


@flow(name="index-codebase", validate_parameters=True, task_runner=TASK_RUNNER, **HOOKS)
@documented_parameters
def index_codebase(
    directory: Directory,
    force_reindex: ForceReindex = False,
    indexing_mode: Mode = IndexingMode.auto,
    force_reembed: ForceReembed = False,
) -> State:
    """Index a Rust code base: what changed since the last run, or everything with force_reindex."""
    started = time.perf_counter()
    settings = load_settings()
    clock = StageClock()
    force = force_reindex or force_reembed

    with stopping.stop_inside_flow_run(), PeakRss() as rss:
        found = _discover(Path(directory), settings, clock)
        layout = CodebaseLayout.for_root(found.root, settings)
        source_bytes = sum(f.size for f in found.files)
        plan = plan_for_run(settings, len(found.files), source_bytes, IndexingMode(indexing_mode).value)
        stats = IndexStats(
            directory=str(layout.root),
            codebase_id=layout.codebase_id,
            data_dir=str(layout.data_dir),
            mode=plan.mode,
            force_reindex=force,
            files_total=len(found.files),
            plan=plan.describe(),
        )
        stats.skip(found.skipped)

        with one_run_at_a_time(layout, settings, stats), progress_file(layout), progress_in_the_ui(stats), \
                said_plainly(layout):
            require_space(
                layout.data_dir,
                run_needs(source_bytes if force or not layout.manifest_path.exists() else 0),
                freed_first=folder_bytes(layout.tantivy_dir) + folder_bytes(layout.edge_dir) if force else 0,
            )
            index = dag.open_index(layout, settings, plan, force, force_reembed)
            rss.watch(index.worker_pids)
            try:
                with bulk_mode(index, stats, clock):
                    _index_changes(index, found, stats, clock, started)
                stats.chunks_total = index.tantivy.count()
                stats.notes += index.notes
            finally:
                index.close()

    stats.stage_seconds = clock.rounded()
    stats.wall_seconds = round(time.perf_counter() - started, 3)
    stats.peak_rss_mb = rss.peak_mb
    publish_summary(stats)
    get_run_logger().info(
        "%s (%s): %d files (%d indexed, %d unchanged, %d deleted, %d skipped), %d chunks written "
        "(%d embedded, %d from cache), %d in the index, peak RSS %.0f MB",
        layout.root, plan.mode, stats.files_total, stats.files_indexed, stats.files_unchanged, stats.files_deleted,
        len(stats.files_skipped), stats.chunks_written, stats.chunks_embedded, stats.chunks_reused,
        stats.chunks_total, stats.peak_rss_mb,
    )  # fmt: skip
    # The headline is the state's message, which the UI shows on the run and a nightly run reads;
    # a caller of the flow still gets the stats (its result).
    return Completed(message=stats.headline(), data=stats)


def _discover(root: Path, settings: Settings, clock: StageClock) -> Discovery:
    progress.stage("discover")
    with clock.time("discover"):
        found = dag.discover_files(root, settings.max_file_bytes)
    return found.require_files()


def _index_changes(index: IndexSession, found: Discovery, stats: IndexStats, clock: StageClock, started: float) -> None:
    """merkle diff -> remove stale chunks -> index what changed (the mode) -> commit."""
    progress.stage("hash")
    with clock.time("hash"):
        current, unreadable = dag.hash_files(found.files, index.previous, index.plan.hash_workers)
    stats.skip(unreadable)
    changes = diff(index.previous, current)
    stats.files_unchanged, stats.files_deleted = len(changes.unchanged), len(changes.deleted)
    stats.skip(changes.still_failing)
    if not index.fresh:  # a first or forced run that dies starts over anyway
        save_unfinished(index.layout, changes.to_remove)
    clock.merge(dag.remove_files(index, changes.to_remove))

    to_index = set(changes.to_index)
    if not index.fresh:
        require_space(index.layout.data_dir, run_needs(sum(f.size for f in found.files if f.rel_path in to_index)))
    failures = run_mode(index, [f for f in found.files if f.rel_path in to_index], stats, clock)

    index.manifest.last_run = _last_run(stats, time.perf_counter() - started)
    progress.stage("commit")
    with clock.time("commit"):
        index.release_batch_resources()
        snapshot = current.after_run(failures + changes.still_failing)
        dag.commit_index(index, snapshot, prune_cache=index.fresh)
    if not index.fresh and not changes.nothing_to_do:
        with clock.time("optimize"):  # a first or forced load builds its graph at bulk exit
            dag.keep_searchable(index)


@contextlib.contextmanager
def bulk_mode(index: IndexSession, stats: IndexStats, clock: StageClock) -> Iterator[None]:
    """Bulk mode around a load into empty stores, exited whatever happens inside, except a stop
    by a signal: building the graphs takes longer than a stop may, so the record stays and the
    next run ends bulk mode first."""
    state = dag.enter_bulk_mode(index) if index.fresh else None
    try:
        yield
    finally:
        if state is not None and not stopping.requested():
            progress.stage("optimize")
            with clock.time("optimize"):
                dag.exit_bulk_mode(index, state)
            stats.notes.append(state.note)


class CacheDamaged(RuntimeError):
    """The embedding cache broke during the run (it is checked when opened)."""


@contextlib.contextmanager
def said_plainly(layout: CodebaseLayout) -> Iterator[None]:
    """A full disk (ENOSPC from a store, the cache or a file write) and a cache that breaks
    during the run end it with one line that says what to do."""
    import sqlite3

    try:
        yield
    except DiskFull:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise disk_full_error(layout.data_dir, error) from error
        if isinstance(error, sqlite3.DatabaseError):
            raise CacheDamaged(
                f"the embedding cache {layout.cache_path} is damaged ({error}): delete it and rerun "
                f"`rci index {layout.root}` (text not in the cache is embedded again)"
            ) from error
        raise


@contextlib.contextmanager
def progress_file(layout: CodebaseLayout) -> Iterator[None]:
    """run.json: how far the run has got, for `rci status` and the MCP server, while it runs."""
    record = progress.RunFile(layout.run_path)
    try:
        with progress.also_reporting_to(record):
            yield
    finally:
        record.remove()


@contextlib.contextmanager
def one_run_at_a_time(layout: CodebaseLayout, settings: Settings, stats: IndexStats) -> Iterator[None]:
    """The data folder's lock first (it covers CLI runs and every Prefect server, and the kernel
    drops it when its holder dies, SIGKILL included), then Prefect's concurrency slot for the
    code base, which shows in the UI which code bases are being indexed. Holding the lock, no
    live run can hold the slot: one still taken is left by a run that died, and is freed."""
    label = f"flow run '{flow_run.name}'" + (f" of deployment '{deployment.name}'" if deployment.name else "")
    logger = get_run_logger()

    def waiting(holder: str) -> None:
        progress.stage("waiting")
        line = f"waiting for {holder} to finish with {layout.root} (at most {settings.lock_wait_seconds:.0f} s)"
        logger.info(line)
        progress.note(line)

    def taking_over(previous: dict) -> None:
        line = f"{describe_holder(previous)} ended without finishing; taking over {layout.root}"
        if mark_crashed(previous.get("flow_run_id")):
            line += " and marking that run Crashed"
        logger.warning(line)
        progress.note(line)
        stats.notes.append(line)

    with contextlib.ExitStack() as held:
        held.enter_context(
            codebase_lock(
                layout.lock_path, settings.lock_wait_seconds, label,
                on_wait=waiting, on_takeover=taking_over, flow_run_id=str(flow_run.id) if flow_run.id else None,
            )  # fmt: skip
        )
        held.enter_context(prefect_slot(f"rci-index-{layout.codebase_id}"))
        logger.info("holding %s: no other run writes its index until this one ends", layout.root)
        try:
            yield
        finally:
            logger.info("released %s", layout.root)


def mark_crashed(flow_run_id: str | None) -> bool:
    """The flow run of a run that died (SIGKILL, OOM, power) shows Crashed, not Running for ever.
    False when it is unknown to this Prefect server (another server's, or the temporary one's)."""
    if not flow_run_id:
        return False
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
            if run.state is None or run.state.is_final():
                return False
            message = "the process running it died without finishing (found by the next run of its code base)"
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
            return True
    except Exception:  # not this server's run: nothing to mark
        return False


@contextlib.contextmanager
def prefect_slot(name: str) -> Iterator[None]:
    """Prefect's global concurrency limit `name` (limit 1), held for the run. Only called with
    the code base's lock held, so it never has to wait for a live run."""
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, 1)
        except ObjectAlreadyExists:  # created by a run that started at the same moment
            pass
        if client.read_global_concurrency_limit_by_name(name).active_slots > 0:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
            logger.info("freed Prefect concurrency slot %s: the run that held it is gone", name)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(concurrency(name, occupy=1, timeout_seconds=30, strict=True))
        except TimeoutError:  # the lock is what keeps runs apart: the slot only shows it
            logger.warning("could not take Prefect concurrency slot %s; indexing without it", name)
        yield


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
