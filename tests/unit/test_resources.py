import os
import platform
import subprocess
import sys

import pytest

from tasks.resources import MALLOC_ARENAS

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


def heaps(arg: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", HEAPS_AFTER_SIX_THREADS, arg], capture_output=True, text=True, env=env, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's arena cap exists only in glibc; elsewhere limit_malloc_arenas does nothing")
def test_the_flow_module_caps_the_c_heaps_before_a_run_starts_threads():
    assert heaps("plain") > MALLOC_ARENAS  # glibc's default: a heap per thread, up to 8 per core
    assert heaps("flow") == MALLOC_ARENAS
