"""What `rci` shows people: a progress bar on stderr, then a short summary on stdout."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tasks.progress import ProgressSink, Silent
from tasks.stats import IndexStats
from tasks.status import IndexStatus

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
MAX_LISTED = 10

_STAGE_LABELS = {
    "discover": "Finding files",
    "hash": "Hashing",
    "parse": "Parsing",
    "embed": "Embedding",
    "write": "Writing",
    "index": "Indexing",
    "commit": "Committing",
    "optimize": "Building graphs",
    "waiting": "Waiting (another run)",
}


class _BarSink:
    """Feeds the bar from progress events: chunks embedded out of chunks found so far.
    Events come from the modes' worker threads, hence the lock around the counters."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.task = bar.add_task(_STAGE_LABELS["discover"], total=None, files="")
        self.files_total = 0
        self.files_finished = 0
        self.chunks_total = 0
        self.lock = threading.Lock()

    def files_planned(self, count: int) -> None:
        with self.lock:
            self.files_total = count
            self._files()

    def chunks_planned(self, count: int) -> None:
        with self.lock:
            self.chunks_total += count
            self.bar.update(self.task, total=self.chunks_total)

    def chunks_embedded(self, count: int) -> None:
        self.bar.advance(self.task, count)

    def files_done(self, count: int) -> None:
        with self.lock:
            self.files_finished += count
            self._files()

    def stage(self, name: str) -> None:
        self.bar.update(self.task, description=_STAGE_LABELS.get(name, name.capitalize()))

    def note(self, text: str) -> None:
        self.bar.console.print(f"note: {text}", markup=False, highlight=False)


class _NotesOnly(Silent):
    """Without a terminal: no bar, but the lines meant for people still reach stderr."""

    def note(self, text: str) -> None:
        err.print(f"note: {text}", markup=False, highlight=False)

    def _files(self) -> None:
        self.bar.update(self.task, files=f"{self.files_finished:,}/{self.files_total:,} files")


@contextlib.contextmanager
def progress_bar() -> Iterator[ProgressSink]:
    """A live bar on a terminal; nothing at all when stderr is a pipe or a file (CI logs)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield _NotesOnly()
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<13}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks  {task.fields[files]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        yield _BarSink(bar)


def print_index_summary(stats: IndexStats) -> None:
    if stats.mode == "up-to-date":
        out.print(f"[bold]Up to date[/] {stats.directory}: nothing changed since the last run")
        out.print(f"  files    {stats.files_total:,} found: {stats.files_unchanged:,} unchanged, "
                  f"{len(stats.files_skipped):,} skipped")  # fmt: skip
        out.print(f"  chunks   {stats.chunks_total:,} in the index")
        _listed("skipped", [f"{s.path}: {s.reason}" for s in stats.files_skipped])
        out.print(f"  checked  in {sum(stats.stage_seconds.values()):.2f} s (file sizes and mtimes; no file read)")
        out.print(f"  index    {stats.data_dir}", markup=False)
        return
    verb = "Rebuilt" if stats.force_reindex else "Indexed"
    out.print(f"[bold]{verb}[/] {stats.directory} in {stats.wall_seconds:.1f} s", highlight=False)
    plan = stats.plan
    if plan:
        out.print(f"  mode     {stats.mode}: {plan.get('reason', '')}", markup=False)
    out.print(
        f"  files    {stats.files_total:,} found: {stats.files_indexed:,} indexed, {stats.files_unchanged:,} unchanged, "
        f"{stats.files_deleted:,} deleted, {len(stats.files_skipped):,} skipped"
    )
    bm25_only = stats.chunks_written - stats.chunks_embedded - stats.chunks_reused  # tasks.chunk.has_vector
    out.print(
        f"  chunks   {stats.chunks_written:,} written ({stats.chunks_embedded:,} embedded, "
        f"{stats.chunks_reused:,} from the cache" + (f", {bm25_only:,} in BM25 alone" if bm25_only > 0 else "")
        + f"), {stats.chunks_total:,} in the index"
    )
    _listed("skipped", [f"{s.path}: {s.reason}" for s in stats.files_skipped])
    _listed("warning", [f"{w.path}: {w.reason}" for w in stats.warnings])
    if stats.secrets_withheld:
        _listed("secret", [f"{s} withheld from both indexes" for s in stats.secrets_withheld])
    for note in stats.notes:
        out.print(f"  note     {note}", markup=False)
    stages = " · ".join(f"{name} {seconds:.2f}" for name, seconds in stats.stage_seconds.items())
    out.print(f"  seconds  {stages}")
    out.print(f"  memory   peak RSS {stats.peak_rss_mb:,.0f} MB")
    out.print(f"  index    {stats.data_dir}", markup=False)


def _listed(label: str, lines: list[str]) -> None:
    for line in lines[:MAX_LISTED]:
        out.print(f"  {label:<8} {line}", markup=False)
    if len(lines) > MAX_LISTED:
        out.print(f"  {label:<8} ... and {len(lines) - MAX_LISTED} more (`rci index --json` lists all)")


def _progress(progress: dict) -> str:
    if not progress:
        return ""
    return (
        f": {progress.get('stage', '?')}, {progress.get('files_done', 0):,}/{progress.get('files_planned', 0):,} files, "
        f"{progress.get('chunks_embedded', 0):,}/{progress.get('chunks_planned', 0):,} chunks embedded"
    )


def print_status(info: IndexStatus) -> None:
    if info.damaged:
        err.print(f"error: {info.damaged}", markup=False)
        return
    if not info.indexed:
        out.print(f"{info.directory} is not indexed yet; run `rci index {info.directory}`", markup=False)
        if info.running:
            out.print(f"  running       {info.running}{_progress(info.progress)}", markup=False)
        return
    run = info.last_run
    out.print(f"{info.directory}", markup=False)
    if info.running:
        out.print(f"  running       {info.running}{_progress(info.progress)}", markup=False)
    out.print(f"  files         {info.files:,}")
    if info.chunks_qdrant is None:
        out.print(f"  chunks        {info.chunks_tantivy:,} in Tantivy (Qdrant {info.qdrant} not counted)", markup=False)
    else:
        agree = "yes" if info.stores_agree else f"NO: {info.disagreement}"
        out.print(f"  chunks        {info.chunks_tantivy:,} in Tantivy, {info.chunks_qdrant:,} with vectors in Qdrant "
                  f"({info.qdrant})")  # fmt: skip
        out.print(f"  stores agree  {agree}", markup=False)
    out.print(f"  model         {info.model} ({info.model_source})", markup=False)
    if run:
        out.print(
            f"  last run      {run.get('finished_at', '?')}: {run.get('mode', '?')}, "
            f"{run.get('files_indexed', 0):,} files indexed, {run.get('chunks_written', 0):,} chunks written "
            f"in {run.get('seconds', 0)} s"
        )
    out.print(f"  index         {info.data_dir}", markup=False)
    if info.note:
        out.print(f"  note          {info.note}", markup=False)
