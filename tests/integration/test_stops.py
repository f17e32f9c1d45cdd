"""A run that is stopped or killed never blocks the next one.

Real signals at named moments (tasks/checkpoints.py): SIGTERM and SIGINT end a run within 5 s
in every phase, with exit 130; SIGKILL leaves no process, no held lock or Prefect slot, and a
flow run that shows Crashed; the next run starts at once, says whom it took over from, and
leaves the same index as a clean run.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tasks.settings import CodebaseLayout, load_settings
from tests.conftest import build_demo_crate, rci
from tests.integration.helpers import (
    assert_all_gone, assert_nothing_listens, assert_same_as_a_clean_index, assert_stores_agree, kill, start_index,
    stores_of, wait_for_listener, wait_until_frozen,
)  # fmt: skip

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

STOP_WITHIN_SECONDS = 5  # the README's promise for SIGINT and SIGTERM


def change(crate: Path, n: int) -> str:
    """A new function in a file: its chunk must be embedded, so the run reaches every phase."""
    name = f"added_in_step_{n}"
    with (crate / "src" / "net.rs").open("a") as source:
        source.write(f"\n/// Added by step {n}.\npub fn {name}() -> u32 {{ {n} }}\n")
    return name


def stop(run: subprocess.Popen, signum: int, frozen: bool) -> float:
    """Send `signum` (to a frozen run: then let it go on) and time how long it takes to exit."""
    run.send_signal(signum)
    started = time.monotonic()
    if frozen:
        run.send_signal(signal.SIGCONT)
    run.wait(timeout=60)
    return time.monotonic() - started


def wait_for_line(path: Path, text: str, run: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert run.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"never printed {text!r}: {path.read_text()}"
        time.sleep(0.05)


def lock_holder(crate: Path, data_dir: Path) -> dict:
    layout = CodebaseLayout.for_root(crate, load_settings(data_dir=data_dir))
    return json.loads(layout.lock_path.read_text() or "{}")


def flow_run_state(flow_run_id: str) -> dict:
    response = httpx.get(f"{os.environ['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=10)
    response.raise_for_status()
    return response.json()["state"]


def test_sigterm_and_sigint_stop_a_run_within_5_s_in_every_phase(demo_crate, data_dir, tmp_path):
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    committed = set(stores_of(demo_crate, data_dir)[0])
    seconds = {}
    for step, (point, signum) in enumerate(
        [("hash", signal.SIGTERM), ("embed", signal.SIGTERM), ("write", signal.SIGINT), ("commit:tantivy", signal.SIGTERM)]
    ):
        change(demo_crate, step)
        run = start_index(demo_crate, "--mode", "pipeline", freeze_at=point)
        children = wait_until_frozen(run, point)
        if point == "embed":  # a second run waits for this one: stop it while it waits
            log = tmp_path / "waiting.log"
            with log.open("w") as stderr:
                waiting = start_index(demo_crate, stderr=stderr)
            wait_for_line(log, "note: waiting for flow run", waiting)
            seconds["waiting"] = stop(waiting, signal.SIGTERM, frozen=False)
            assert waiting.returncode == 130 and "interrupted" in log.read_text(), log.read_text()
        seconds[point] = stop(run, signum, frozen=True)
        _, stderr = run.communicate()
        assert run.returncode == 130, stderr
        assert stderr.strip().splitlines()[-1].startswith("error: interrupted; the index keeps its last committed state")
        assert "Traceback" not in stderr
        assert_all_gone(children)
        if point != "commit:tantivy":  # Tantivy still holds what the last commit left
            assert set(stores_of(demo_crate, data_dir)[0]) == committed
    print("seconds from the signal to the exit:", {k: round(v, 2) for k, v in seconds.items()})
    assert all(v < STOP_WITHIN_SECONDS for v in seconds.values()), seconds
    again = rci("index", str(demo_crate))
    assert again.returncode == 0, again.stderr
    assert "waiting" not in again.stderr
    docs, points = stores_of(demo_crate, data_dir)
    assert_stores_agree(docs, points)
    assert {f"demo_tensor::net::added_in_step_{n}" for n in range(4)} <= {d["symbol"] for d in docs.values()}


def test_a_run_killed_while_it_waits_leaves_nothing_behind_and_blocks_no_one(demo_crate, data_dir, tmp_path):
    """The waiting run uses its own temporary Prefect server: that dies with it too."""
    holder = start_index(demo_crate, freeze_at="embed")
    wait_until_frozen(holder, "embed")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    log = tmp_path / "waiting.log"
    with log.open("w") as stderr:
        waiting = start_index(demo_crate, env=env, stderr=stderr)
    wait_for_line(log, "note: waiting for flow run", waiting)
    line = next(line for line in log.read_text().splitlines() if "waiting for" in line)
    assert f"pid {holder.pid} on " in line and "since " in line and "at most 900 s" in line  # whom, since when
    port = wait_for_listener(waiting)  # its own Prefect server, in its process
    kill(waiting, psutil.Process(waiting.pid).children(recursive=True))
    assert_nothing_listens(port)
    holder.send_signal(signal.SIGCONT)
    _, stderr = holder.communicate(timeout=300)
    assert holder.returncode == 0, stderr
    change(demo_crate, 2)
    after = rci("index", str(demo_crate))
    assert after.returncode == 0, after.stderr
    assert "waiting" not in after.stderr and "taking over" not in after.stderr, after.stderr
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)


def test_a_killed_run_shows_crashed_found_by_the_next_run_at_once_or_by_the_server_without_one(
    demo_crate, data_dir, tmp_path, monkeypatch
):
    """Two code bases, a run of each SIGKILLed. The second's next run takes over at once and
    marks it Crashed; nothing runs the first again, and the automation that `rci index` set up
    on the server marks it Crashed when its heartbeats stop (meanwhile the second is handled)."""
    after = 45
    # Every run of the test sets the same wait: a run with another one updates the automation,
    # and an update starts the server's watch over (what it expected of the killed run is lost).
    monkeypatch.setenv("RCI_CRASHED_AFTER_SECONDS", str(after))
    alone = build_demo_crate(tmp_path / "alone")
    unattended = start_index(alone, freeze_at="embed")
    unattended_children = wait_until_frozen(unattended, "embed")
    unattended_run = lock_holder(alone, data_dir)["flow_run_id"]
    automations = httpx.post(f"{os.environ['PREFECT_API_URL']}/automations/filter", json={}, timeout=10).json()
    ours = [a for a in automations if a["name"] == "rust-code-index: mark unresponsive runs Crashed"]
    assert len(ours) == 1 and ours[0]["trigger"]["within"] == after
    kill(unattended, unattended_children)
    killed_at = time.monotonic()

    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    change(demo_crate, 1)
    run = start_index(demo_crate, "--mode", "sequential", freeze_at="write")
    children = wait_until_frozen(run, "write")
    killed = lock_holder(demo_crate, data_dir)
    assert killed["pid"] == run.pid and killed["flow_run_id"]
    kill(run, children)
    assert flow_run_state(killed["flow_run_id"])["type"] == "RUNNING"  # nothing told the server
    started = time.monotonic()
    again = rci("index", str(demo_crate))
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert "waiting" not in again.stderr
    assert f"pid {run.pid} on" in again.stderr and "ended without finishing; taking over" in again.stderr
    assert "marking that run Crashed" in again.stdout  # also in the run's summary
    state = flow_run_state(killed["flow_run_id"])
    assert state["type"] == "CRASHED" and "found by the next run" in state["message"]
    print(f"the next run took {took:.1f} s in all")
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)

    while (state := flow_run_state(unattended_run))["type"] == "RUNNING":
        assert time.monotonic() - killed_at < after + 60, "the unattended killed run still shows Running"
        time.sleep(1)
    print(f"Crashed {time.monotonic() - killed_at:.0f} s after the SIGKILL (RCI_CRASHED_AFTER_SECONDS={after})")
    assert state["type"] == "CRASHED" and "no heartbeat" in state["message"]
