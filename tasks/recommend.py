"""recommend(): mode, workers and batch sizes from the code base's size and the machine.

The rule, first match wins (measured on 2 cores / 24 GiB, see README "Benchmarks"):

| condition                              | mode       | why                                                  |
| -------------------------------------- | ---------- | ---------------------------------------------------- |
| less than 1 GiB of memory available    | sequential | smallest footprint: one file in memory at a time     |
| at most 8 files to index               | sequential | nothing to overlap; cross-file batches cannot form   |
| under 2,000 files, 4+ GiB available    | parallel   | fastest: one model per core, whole batches at once   |
| otherwise                              | pipeline   | stages overlap, memory bounded by batches in flight  |

Embedding is almost all the work and keeps every core busy in any mode. On the small
corpus (105 files, 2 cores) parallel ran at 1.02x the embed-only limit, pipeline 1.12x,
sequential 1.29x; parallel holds one model per worker (942 MB peak against 700).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import psutil

GIB = 1 << 30
MIB = 1 << 20
# A batch's source, at most: what a batch holds in memory (its chunks, their vectors, the
# tokenizer's work) follows it. Large corpus, force reindex, pipeline: 128 files per batch
# peaked at 576 MB, 32 files (0.3 MB of source on average) at 502 MB, in the same time.
# Embedding loses nothing to the smaller batches: on the medium corpus, 19 batches instead of
# 8 pad 0.3% more tokens (length-sorted within each batch) in 0.4% more model calls.
BATCH_BYTES = 512 * 1024
TANTIVY_HEAP_PER_THREAD = 16 * MIB  # Tantivy's floor is 15 MB per thread


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str
    reason: str
    file_batch_size: int  # files per batch (every mode)
    batch_bytes: int  # and at most this much source per batch (a larger file alone)
    workers: int  # batches processed at once (parallel); embedders in use
    embed_threads: int  # ONNX Runtime threads per embedder
    max_in_flight: int  # batches between read and write at once (pipeline)
    parse_processes: int  # processes for read+parse+chunk; 0: in the calling thread
    hash_workers: int  # threads hashing changed files
    tantivy_heap_bytes: int
    tantivy_threads: int
    # ONNX Runtime's own CPU session for the embedders (graph optimizations, memory patterns)
    # instead of the lean one (tasks/embed.py): faster, about 100 MB more per model. Only in
    # parallel mode, which recommend() picks with 4 GiB available (tests/benchmarks/README.md,
    # "The embedder's ONNX session").
    fast_session: bool = False

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Machine:
    cores: int
    available_bytes: int

    @classmethod
    def current(cls) -> Machine:
        cores = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
        return cls(cores, psutil.virtual_memory().available)


def choose_mode(files: int, machine: Machine) -> tuple[str, str]:
    """The table above: (mode, reason)."""
    memory = f"{machine.available_bytes / GIB:.1f} GiB available"
    if machine.available_bytes < GIB:
        return "sequential", f"only {memory}: one file in memory at a time"
    if files <= 8:
        return "sequential", f"{files} files to index: nothing to overlap"
    if files < 2000 and machine.available_bytes >= 4 * GIB:
        return "parallel", f"{machine.cores} cores, {files:,} files, {memory}: one model per core, batches at once"
    return "pipeline", f"{machine.cores} cores, {files:,} files, {memory}: stages overlap, memory stays bounded"


def recommend(files: int, total_bytes: int = 0, machine: Machine | None = None, mode: str | None = None) -> Plan:
    """The plan for indexing `files` files (`total_bytes` of source); `mode` forces the mode."""
    machine = machine or Machine.current()
    chosen, reason = choose_mode(files, machine)
    if mode and mode != chosen:
        chosen, reason = mode, "chosen by the caller"
    cores = max(machine.cores, 1)
    workers = cores if chosen == "parallel" else 1
    # Enough batches to overlap stages (>= 8 in a pipeline), small enough that one batch's
    # chunks stay a few MB (~30 chunks per file, ~2.5 KB per chunk with its vector). Files
    # alone do not bound that: 128 files of the large corpus held 0.3 to 4.2 MB of source.
    file_batch_size = max(8, min(128, math.ceil(files / 8))) if chosen != "sequential" else 64
    # Tantivy's writer holds about 1.5x its heap once a code base fills it, and the heap barely
    # matters for speed. Large corpus, 245k chunks, one thread, heap 16 / 32 / 64 / 128 MiB:
    # +28 / +50 / +96 / +150 MB of RSS, 27.5 / - / 24.2 / - s of CPU, 16 / - / 4 / - segments
    # after the commit. The medium corpus (31k chunks) never fills 64 MiB (+31 MB), so 16 MiB
    # per thread is what keeps a large code base's run at a medium one's memory.
    tantivy_threads = 1 if files < 1000 or cores < 4 else 2
    tantivy_heap = TANTIVY_HEAP_PER_THREAD * tantivy_threads
    return Plan(
        mode=chosen,
        reason=reason,
        file_batch_size=file_batch_size,
        batch_bytes=BATCH_BYTES,
        workers=workers,
        embed_threads=max(1, cores // workers),
        max_in_flight=3 if chosen == "pipeline" else workers * 2,
        parse_processes=0 if cores < 4 or chosen == "sequential" else min(cores // 2, 4),
        hash_workers=1 if chosen == "sequential" else min(cores * 2, 8),
        tantivy_heap_bytes=int(tantivy_heap),
        tantivy_threads=tantivy_threads,
        fast_session=chosen == "parallel",
    )
