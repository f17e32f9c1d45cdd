"""What an indexing run returns and the CLI summarises: counts, reasons, seconds per stage."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from pydantic import BaseModel, Field

from tasks.records import FileIssue, SecretFinding

STAGES = ("discover", "hash", "read", "parse", "chunk", "secrets", "cache", "embed", "tantivy", "qdrant", "commit", "optimize")


class FileReason(BaseModel):
    path: str
    reason: str


class IndexStats(BaseModel):
    directory: str
    codebase_id: str
    data_dir: str
    mode: str
    force_reindex: bool = False
    files_total: int = 0  # .rs files found (after ignore rules)
    files_indexed: int = 0  # added or modified files now in both stores
    files_unchanged: int = 0
    files_deleted: int = 0  # gone since the last run: their chunks were removed
    files_skipped: list[FileReason] = Field(default_factory=list)  # not indexed, with the reason
    warnings: list[FileReason] = Field(default_factory=list)  # indexed, with a problem (syntax errors)
    chunks_written: int = 0
    chunks_embedded: int = 0  # texts the model embedded
    chunks_reused: int = 0  # vectors taken from the embedding cache
    tokens_embedded: int = 0  # model tokens of the texts embedded (each at most the model's input length)
    chunks_total: int = 0  # chunks in the index after the run
    secrets_withheld: list[str] = Field(default_factory=list)  # "path:line (kind)", never the secret
    stage_seconds: dict[str, float] = Field(default_factory=dict)  # summed over batches (and threads)
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0  # this run's process and its worker processes
    plan: dict = Field(default_factory=dict)  # recommend()'s choices: mode, reason, workers, batch sizes
    notes: list[str] = Field(default_factory=list)

    def headline(self) -> str:
        """The run in one line: a flow run's final state message, the nightly table's row."""
        return (
            f"{self.files_indexed:,} files indexed, {self.files_unchanged:,} unchanged, {self.files_deleted:,} deleted, "
            f"{len(self.files_skipped):,} skipped; {self.chunks_embedded:,} chunks embedded, "
            f"{self.chunks_total:,} in the index; {self.wall_seconds:.1f} s"
        )

    def skip(self, issues: list[FileIssue]) -> None:
        self.files_skipped += [FileReason(path=i.rel_path, reason=i.reason) for i in issues]

    def warn(self, issues: list[FileIssue]) -> None:
        self.warnings += [FileReason(path=i.rel_path, reason=i.reason) for i in issues]

    def withheld(self, findings: list[SecretFinding]) -> None:
        self.secrets_withheld += [str(f) for f in findings]


class BatchOutcome(BaseModel):
    """What one batch did, whatever the mode: the flow adds these up."""

    files: int
    indexed: list[str]
    skipped: list[FileReason] = Field(default_factory=list)
    warnings: list[FileReason] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    failed: list[tuple[str, str, bool]] = Field(default_factory=list)  # (path, reason, retry)
    chunks_written: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    tokens_embedded: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)

    def add_to(self, stats: IndexStats, clock: StageClock) -> None:
        stats.files_indexed += len(self.indexed)
        stats.files_skipped += self.skipped
        stats.warnings += self.warnings
        stats.secrets_withheld += self.secrets
        stats.chunks_written += self.chunks_written
        stats.chunks_embedded += self.chunks_embedded
        stats.chunks_reused += self.chunks_reused
        stats.tokens_embedded += self.tokens_embedded
        clock.merge(self.seconds)

    def failures(self) -> list[FileIssue]:
        return [FileIssue(path, reason, retry) for path, reason, retry in self.failed]


class StageClock:
    """Seconds spent per stage, summed over batches."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def merge(self, other: dict[str, float]) -> None:
        for stage, seconds in other.items():
            self.add(stage, seconds)

    def rounded(self) -> dict[str, float]:
        order = {stage: i for i, stage in enumerate(STAGES)}
        return {k: round(v, 3) for k, v in sorted(self.seconds.items(), key=lambda kv: order.get(kv[0], 99))}
