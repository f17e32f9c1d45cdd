"""The three shapes of the indexing DAG, over the same tasks.

    sequential  [file -> read/parse/chunk -> embed -> write] then the next file
    parallel    batches B1..Bn on the task runner's threads: read/parse/chunk (in processes
                when planned) -> embed, each worker with its own model; the flow's thread
                writes each batch as it finishes (the single writer)
    pipeline    prepare(B1) -> embed(B1) -> write(B1)
                   prepare(B2) -> embed(B2) -> write(B2)        embeds chained, writes chained:
                      prepare(B3) -> embed(B3) -> write(B3)     B3 is parsed while B2 is embedded
                                                                and B1 written; at most
                                                                max_in_flight batches at once

Every shape returns the files that failed, and adds each batch's outcome to the run's stats.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed, wait

from flows.run_artifacts import batch_line
from tasks import dag, progress, stopping
from tasks.records import FileIssue, SourceFile
from tasks.session import IndexSession
from tasks.stats import BatchOutcome, IndexStats, StageClock


def batches(files: Sequence[SourceFile], size: int, max_bytes: int) -> list[list[SourceFile]]:
    """Consecutive files, at most `size` and `max_bytes` of source per batch (a larger file alone)."""
    found: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    current_bytes = 0
    for source in files:
        if current and (len(current) == size or current_bytes + source.size > max_bytes):
            found.append(current)
            current, current_bytes = [], 0
        current.append(source)
        current_bytes += source.size
    if current:
        found.append(current)
    return found


class _Tally:
    """Adds batch outcomes to the stats and remembers the failures."""

    def __init__(self, stats: IndexStats, clock: StageClock):
        self.stats, self.clock = stats, clock
        self.failures: list[FileIssue] = []

    def add(self, outcome: BatchOutcome) -> None:
        outcome.add_to(self.stats, self.clock)
        self.failures += outcome.failures()
        get_run_logger().info(batch_line(outcome))  # a line per batch in the run's log (the UI)


def index_sequential(index: IndexSession, files: Sequence[SourceFile], tally: _Tally) -> None:
    for batch in batches(files, index.plan.file_batch_size, index.plan.batch_bytes):
        tally.add(dag.index_one_by_one(index, batch))


def index_parallel(index: IndexSession, files: Sequence[SourceFile], tally: _Tally) -> None:
    pending = deque(batches(files, index.plan.file_batch_size, index.plan.batch_bytes))
    running: set[PrefectFuture] = set()
    with _settled(running):
        while pending or running:
            while pending and len(running) < index.plan.max_in_flight:
                running.add(dag.prepare_and_embed.submit(index, pending.popleft()))
            finished = next(as_completed(list(running)))
            running.discard(finished)
            tally.add(dag.write_batch(index, finished.result()))  # the flow's thread: the single writer


def index_pipeline(index: IndexSession, files: Sequence[SourceFile], tally: _Tally) -> None:
    in_flight: deque[tuple[PrefectFuture, ...]] = deque()  # each batch's (prepare, embed, write)
    # Futures hold their results (a batch's chunks and vectors): a batch's are dropped once it
    # is written, or memory grows with the code base instead of with the batches in flight.
    submitted: set[PrefectFuture] = set()
    last_embed = last_write = None

    def finish_oldest() -> None:
        futures = in_flight.popleft()
        tally.add(futures[-1].result())
        submitted.difference_update(futures)

    with _settled(submitted):
        for batch in batches(files, index.plan.file_batch_size, index.plan.batch_bytes):
            prepared = dag.prepare_batch.submit(index, batch)
            # One embedder uses every core, one writer owns the stores: each stage takes its
            # batches in order, while the next batch's read and parse run alongside.
            embedded = dag.embed_batch.submit(index, prepared, wait_for=[last_embed] if last_embed else None)
            written = dag.write_batch.submit(index, embedded, wait_for=[last_write] if last_write else None)
            submitted.update((prepared, embedded, written))
            in_flight.append((prepared, embedded, written))
            last_embed, last_write = embedded, written
            while len(in_flight) >= index.plan.max_in_flight:
                finish_oldest()
        while in_flight:
            finish_oldest()


class _settled:
    """On failure, let every submitted task finish before the stores are closed under them.
    On a stop, they end at their next check (tasks/stopping.py): wait only that long."""

    def __init__(self, futures: set[PrefectFuture]):
        self.futures = futures

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None and self.futures:
            wait(list(self.futures), timeout=stopping.GRACE_SECONDS if stopping.requested() else None)


MODES: dict[str, Callable[[IndexSession, Sequence[SourceFile], _Tally], None]] = {
    "sequential": index_sequential,
    "parallel": index_parallel,
    "pipeline": index_pipeline,
}


def run_mode(index: IndexSession, files: Sequence[SourceFile], stats: IndexStats, clock: StageClock) -> list[FileIssue]:
    """Index `files` in the session's planned mode; returns the files that failed."""
    progress.files_planned(len(files))
    progress.stage("index")
    tally = _Tally(stats, clock)
    MODES[index.plan.mode](index, files, tally)
    return tally.failures
