"""What a run shows in the Prefect UI besides its task graph: progress, per-batch log lines, and
a summary at the end.

    progress artifact   files (and chunks) done of the planned total, updated per batch
    log lines           one per batch: files, chunks embedded / from the cache, seconds
    summary artifact    the stats table, the stage breakdown, skipped files with their
                        reasons, secrets withheld as path:line and kind, notes

The progress artifact is fed by the run's progress events (tasks/progress.py), like the CLI's
bar; the log lines and the summary come from the flow. Artifacts that cannot be written (an
old server, a lost connection) never fail the run they describe.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Iterator

from tasks import progress
from tasks.stats import BatchOutcome, IndexStats

UPDATE_SECONDS = 2.0  # at most this often between batches, so a big run does not flood the API


class ProgressArtifact:
    """A progress sink that keeps one Prefect progress artifact of the flow run up to date."""

    def __init__(self, title: str, key: str):
        self.title, self.key = title, key
        self.lock = threading.Lock()
        self.artifact_id = None
        self.n_files = self.n_files_done = self.n_chunks = self.n_chunks_embedded = 0
        self.stage_name = "starting"
        self.last_update = 0.0

    def _push(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_update < UPDATE_SECONDS:
            return
        self.last_update = now
        ending = self.stage_name in ("commit", "optimize")
        if self.n_files:
            percent = 100.0 * self.n_files_done / self.n_files
            description = (
                f"{self.title}: {self.stage_name}, {self.n_files_done:,}/{self.n_files:,} files, "
                f"{self.n_chunks_embedded:,}/{self.n_chunks:,} chunks embedded or from the cache so far"
            )
        else:  # nothing to read: done as soon as the run ends
            percent = 100.0 if ending else 0.0
            description = f"{self.title}: {'no file changed since the last run' if ending else self.stage_name}"
        with contextlib.suppress(Exception):
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(percent, key=self.key, description=description)
            else:
                update_progress_artifact(self.artifact_id, percent, description=description)

    def files_planned(self, count: int) -> None:
        with self.lock:
            self.n_files = count
            self._push(force=True)

    def chunks_planned(self, count: int) -> None:
        with self.lock:
            self.n_chunks += count

    def chunks_embedded(self, count: int) -> None:
        with self.lock:
            self.n_chunks_embedded += count

    def files_done(self, count: int) -> None:
        with self.lock:
            self.n_files_done += count
            self._push(force=self.n_files_done >= self.n_files)

    def stage(self, name: str) -> None:
        with self.lock:
            self.stage_name = name
            if name in ("commit", "optimize"):
                self._push(force=True)

    def note(self, text: str) -> None: ...


def artifact_key(kind: str, codebase_id: str) -> str:
    """Prefect's artifact keys take lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{codebase_id}".lower()).strip("-")


@contextlib.contextmanager
def progress_in_the_ui(stats: IndexStats) -> Iterator[None]:
    with progress.also_reporting_to(ProgressArtifact(stats.directory, artifact_key("index-progress", stats.codebase_id))):
        yield


def batch_line(outcome: BatchOutcome) -> str:
    seconds = sum(outcome.seconds.values())
    return (
        f"batch: {outcome.files} files, {outcome.chunks_written} chunks ({outcome.chunks_embedded} embedded, "
        f"{outcome.chunks_reused} from the cache), {seconds:.1f} s of work"
    )


def summary_markdown(stats: IndexStats) -> str:
    verb = "Rebuilt" if stats.force_reindex else "Indexed"
    rows = [
        ("mode", f"{stats.mode}: {stats.plan.get('reason', '')}"),
        ("files", f"{stats.files_total:,} found: {stats.files_indexed:,} indexed, {stats.files_unchanged:,} unchanged, "
                  f"{stats.files_deleted:,} deleted, {len(stats.files_skipped):,} skipped"),
        ("chunks", f"{stats.chunks_written:,} written ({stats.chunks_embedded:,} embedded, {stats.chunks_reused:,} "
                   f"from the cache), {stats.chunks_total:,} in the index"),
        ("wall time", f"{stats.wall_seconds:.1f} s"),
        ("peak RSS", f"{stats.peak_rss_mb:,.0f} MB"),
        ("index", f"`{stats.data_dir}`"),
    ]  # fmt: skip
    lines = [f"# {verb} `{stats.directory}`", "", "| | |", "| --- | --- |"]
    lines += [f"| {name} | {_cell(value)} |" for name, value in rows]
    lines += ["", "## Seconds per stage", "", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in stats.stage_seconds.items()]
    sections = [
        ("Skipped files", [f"`{s.path}`: {_cell(s.reason)}" for s in stats.files_skipped]),
        ("Warnings", [f"`{w.path}`: {_cell(w.reason)}" for w in stats.warnings]),
        ("Secrets withheld from both indexes", [f"`{s}`" for s in stats.secrets_withheld]),
        ("Notes", [_cell(n) for n in stats.notes]),
    ]
    for title, items in sections:
        if items:
            lines += ["", f"## {title}", ""] + [f"- {item}" for item in items]
    return "\n".join(lines) + "\n"


def publish_summary(stats: IndexStats) -> None:
    with contextlib.suppress(Exception):
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(
            summary_markdown(stats), key=artifact_key("index-summary", stats.codebase_id),
            description=f"{stats.directory}: what the run did",
        )  # fmt: skip


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
