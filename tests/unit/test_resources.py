import os
import platform
import subprocess
import sys

import pytest

from tasks.resources import MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD

# Six threads allocate while all are alive, then glibc lists its heaps (one per arena).
HEAPS_AFTER_SIX_THREADS = r"""
import ctypes, ctypes.util, sys, tempfile, threading
if sys.argv[1] == "flow":
    import flows.index  # what `rci index`, deployments and workers import before a run
both_alive = threading.Barrier(6)
def work():
    kept = [bytes(2048) for _ in range(100)]
    both_alive.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
stream = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, stream)
libc.fclose(stream)
print(open(path).read().count("<heap nr="))
"""


# An 8 MiB block is mapped and freed (glibc's threshold follows it up), then a 6 MiB block is
# asked for, more than the heap has free: is it mapped (mallinfo2's count of mapped blocks goes
# up) or is the heap grown for it? (Any block a heap can hold, it takes, whatever the threshold.)
MAPPED_AFTER_A_LARGER_FREE = r"""
import ctypes, ctypes.util, sys
if sys.argv[1] == "flow":
    import flows.index
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(int(sys.argv[2]))
print(libc.mallinfo2().hblks - before)
"""


def run_probe(probe: str, *args) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    done = subprocess.run(
        [sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True, env=env, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


def heaps(arg: str) -> int:
    return run_probe(HEAPS_AFTER_SIX_THREADS, arg)


GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt exists only in glibc; elsewhere tune_malloc does nothing")
def test_the_flow_module_caps_the_c_heaps_before_a_run_starts_threads():
    assert heaps("plain") > MALLOC_ARENAS  # glibc's default: a heap per thread, up to 8 per core
    assert heaps("flow") == MALLOC_ARENAS


@pytest.mark.skipif(not GLIBC, reason="mallopt exists only in glibc; elsewhere tune_malloc does nothing")
def test_blocks_over_the_fixed_threshold_stay_mapped_after_larger_ones_were_freed():
    assert MALLOC_MMAP_THRESHOLD < 6 << 20
    assert run_probe(MAPPED_AFTER_A_LARGER_FREE, "plain", 6 << 20) == 0  # glibc's threshold rose to 8 MiB
    assert run_probe(MAPPED_AFTER_A_LARGER_FREE, "flow", 6 << 20) == 1
