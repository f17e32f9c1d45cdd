"""A run's memory: its peak, sampled, and what keeps glibc's heaps small.

Peak resident memory counts this process and the worker processes it owns, sampled every
0.1 s. The process-wide peak (getrusage) would include earlier runs of a long-lived Prefect
worker, so on Linux the kernel's high-water mark is reset when the run starts and read too:
it also catches moments when no sampling thread can run (Qdrant Edge's optimize() holds the
GIL). Without PREFECT_API_URL the run's Prefect server is a thread of this process, so it counts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from typing import Callable, Iterable

import psutil


class PeakRss:
    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rci-rss", daemon=True)
        self._process = psutil.Process()
        self._worker_pids: Callable[[], Iterable[int]] = lambda: ()
        self._high_water_mark = False

    def watch(self, worker_pids: Callable[[], Iterable[int]]) -> None:
        """Also count these processes (the run's parse workers)."""
        self._worker_pids = worker_pids

    def __enter__(self) -> PeakRss:
        self._high_water_mark = _reset_high_water_mark()
        self._measure()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._measure()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / (1 << 20), 1)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._measure()

    def _measure(self) -> None:
        try:
            total = self._process.memory_info().rss
            for pid in list(self._worker_pids()):
                try:
                    total += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
        except psutil.Error:
            return
        own_peak = _high_water_mark() if self._high_water_mark else 0
        self.peak_bytes = max(self.peak_bytes, total, own_peak)


def _reset_high_water_mark() -> bool:
    """Linux: this process's peak RSS (VmHWM) starts again from its current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _high_water_mark() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# glibc gives a new thread that allocates a heap ("arena") of its own, up to 8 per core, and
# memory freed in one arena serves only the threads using it. A run's task-runner threads,
# tokenizer threads and Tantivy threads each grew their own: a force reindex of the large
# corpus in pipeline mode peaked at 703 MB with the default and 615 MB with 2 arenas (the
# medium corpus 460 and 417 MB), in 297 and 314 s (six runs of that scenario took 297 to 340 s).
MALLOC_ARENAS = 2
# glibc serves a block of at least this size with its own mmap, returned whole when freed. By
# default the threshold rises to the largest such block freed so far (up to 32 MiB), after
# which batch-sized buffers come from the heaps and leave holes there that only grow. Fixed
# at 256 KiB: the large corpus (force reindex, warm cache, pipeline) peaked at 434 MB instead
# of 482, its heaps at 119 MB instead of 253; the medium one at 357 MB instead of 383; the
# same wall time (318 s, 42 s). 128 KiB did no better (458 MB; runs differ by about 20 MB).
MALLOC_MMAP_THRESHOLD = 256 * 1024
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # mallopt's parameter numbers, from glibc's malloc.h


def tune_malloc(arenas: int = MALLOC_ARENAS, mmap_threshold: int = MALLOC_MMAP_THRESHOLD) -> None:
    """Cap glibc's heaps and fix its mmap threshold for this process (elsewhere nothing). The
    cap only binds arenas made after it, so this runs when the flow's module is imported,
    before the run starts its threads; MALLOC_ARENA_MAX and MALLOC_MMAP_THRESHOLD_ in the
    environment, if set, win."""
    try:
        libc = _libc()
        if not os.environ.get("MALLOC_ARENA_MAX"):
            libc.mallopt(_M_ARENA_MAX, arenas)
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    except (AttributeError, OSError):  # not glibc
        pass


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"))


def return_freed_memory() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; elsewhere nothing).

    Loading the embedded Qdrant store builds and drops a Python list of floats per point;
    the freed memory stays in the process and under what is loaded next (the model, the
    next batch) unless it is returned: 212 MB of the 770 MB the medium store took to open.
    """
    try:
        _libc().malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass


def exit_with_parent(interval: float = 0.5) -> None:
    """End this process soon after the process that started it is gone, however it went (a
    SIGKILL leaves no chance to stop children): for the run's parse workers, which would
    otherwise live on, orphaned."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:  # reparented: the parent died
                os._exit(0)

    threading.Thread(target=watch, name="rci-exit-with-parent", daemon=True).start()
