"""Free space for the index: checked before anything is written, and a full disk said in one line.

Qdrant Edge writes through memory-mapped files (its write-ahead log is two 32 MB segments,
mapped). A write into a mapped page on a full disk is not an error a program can catch: the
kernel ends the process with SIGBUS, and even opening the shard to search writes a little. So a
run checks the space it will need before it opens the stores, and a reader does not open the
vector store on a nearly full disk (it answers from BM25 and says why). An estimate is what a
check before the fact can have; an ENOSPC that still happens ends the run with DiskFull's line,
and the index keeps its last committed state.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

MB = 1024 * 1024
# Opening the vector store writes to its write-ahead log; below this, readers leave it closed.
READER_MIN_BYTES = 16 * MB
# Index bytes per byte of Rust source indexed (nom, 0.55 MB of source: 3.4 MB of vector segments,
# 3.6 MB of write-ahead log, 0.9 MB of Tantivy, 8.2 MB of embedding cache), rounded up.
BYTES_PER_SOURCE_BYTE = 32
RUN_MARGIN_BYTES = 32 * MB


class DiskFull(OSError):
    """Not enough space for the index: one line for people, naming the folder and the space."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def free_bytes(path: Path) -> int:
    """Free space on the file system that holds `path` (or would, once created)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def folder_bytes(path: Path) -> int:
    """Space the files under `path` take on disk (allocated blocks, not apparent sizes)."""
    path = Path(path)
    if not path.exists():
        return 0
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_blocks * 512
        except OSError:
            continue
    return total


def run_needs(source_bytes: int) -> int:
    return BYTES_PER_SOURCE_BYTE * source_bytes + RUN_MARGIN_BYTES


def require_space(data_dir: Path, needed: int, freed_first: int = 0) -> None:
    """DiskFull unless `needed` bytes fit, counting `freed_first` (stores a rebuild deletes)."""
    free = free_bytes(data_dir)
    if free + freed_first >= needed:
        return
    raise DiskFull(
        f"not enough free space for the index in {data_dir}: this run needs about {_mb(needed)} MB, "
        f"{_mb(free + freed_first)} MB are free; free some space (or set RCI_DATA_DIR to a larger disk) and "
        "rerun; the index keeps its last committed state"
    )


def reader_can_open(data_dir: Path) -> str | None:
    """Why a reader should leave the vector store closed (a nearly full disk), or None."""
    free = free_bytes(data_dir)
    if free >= READER_MIN_BYTES:
        return None
    return (
        f"the disk holding {data_dir} has {_mb(free)} MB free and the vector store needs "
        f"{_mb(READER_MIN_BYTES)} MB to open; these results are BM25 only until space is freed"
    )


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, however the library that hit it reports it (Python, SQLite, Tantivy, Qdrant)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return any(sign in text for sign in ("No space left on device", "os error 28", "database or disk is full"))


def disk_full_error(data_dir: Path, error: BaseException) -> DiskFull:
    return DiskFull(
        f"the disk holding {data_dir} is full ({_mb(free_bytes(data_dir))} MB free): free some space "
        f"(or set RCI_DATA_DIR to a larger disk) and rerun; the index keeps its last committed state "
        f"({' '.join(str(error).split())[:120]})"
    )


def _mb(size: int) -> int:
    return max(0, round(size / MB))
