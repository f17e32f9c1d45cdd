"""A fleet on one machine, as the README sets one up: a process work pool, the deployments of
deployments/prefect.yaml, index workers (one run each at a time) and the nightly worker.
The fan-out test and tests/benchmarks/bench_nightly.py both use it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from flows.temporary_server import stop_process

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "rci-process"  # the pool deployments/prefect.yaml deploys to


def prefect_cli(env: dict, *args: str) -> str:
    done = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"prefect {' '.join(args)}: {done.stdout[-1500:]}{done.stderr[-1500:]}"
    return done.stdout


def fleet_env(base_env: dict) -> dict:
    """What the README tells a worker's machine to export, plus a quick poll for tests."""
    return {
        **base_env,
        "PATH": f"{BIN}{os.pathsep}{base_env.get('PATH', '')}",  # the venv's python for prefect.yaml's build step
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }


@contextlib.contextmanager
def work_pool(env: dict, index_workers: int, logs: Path) -> Iterator[list[str]]:
    """Deploy prefect.yaml to a fresh process pool and start its workers; yields the index
    workers' names. The workers stop (and their logs stay in `logs`) when the block ends."""
    env = fleet_env(env)
    prefect_cli(env, "work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_cli(env, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    names = [f"index-worker-{n}" for n in range(1, index_workers + 1)]
    commands = [["--work-queue", "index", "--limit", "1", "--name", name] for name in names]
    commands.append(["--work-queue", "nightly", "--name", "nightly-worker"])
    processes = []
    try:
        for args, name in zip(commands, names + ["nightly-worker"]):
            log = open(logs / f"{name}.log", "w")
            processes.append(subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, *args],
                                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        _wait_until_online(names + ["nightly-worker"], processes, logs)
        yield names
    finally:
        for process in processes:
            stop_process(process, timeout=20)


def _wait_until_online(names: list[str], processes: list, logs: Path) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            online = {w.name for w in client.read_workers_for_work_pool(POOL) if str(w.status.value).upper() == "ONLINE"}
            if set(names) <= online:
                return
            for process, name in zip(processes, names):
                assert process.poll() is None, (logs / f"{name}.log").read_text()[-2000:]
            time.sleep(0.5)
    raise AssertionError(f"workers not online in 120 s: {names}")
