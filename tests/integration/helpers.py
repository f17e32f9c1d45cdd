"""Reading both stores back, for assertions on what an index really holds; runs stopped at a
named moment (tasks/checkpoints.py) and killed there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
from tantivy import Query

from tasks.chunk import has_vector
from tasks.edge_store import EdgeStore
from tasks.settings import CodebaseLayout, load_settings
from tasks.store_lease import StoreLease
from tasks.tantivy_store import TantivyStore
from tests.conftest import rci


@contextmanager
def open_stores(root: Path, data_dir: Path | None = None):
    settings = load_settings(data_dir=data_dir) if data_dir else load_settings()
    layout = CodebaseLayout.for_root(root, settings)
    tantivy = TantivyStore.open_existing(layout.tantivy_dir)
    lease = StoreLease(layout.data_dir, "test")
    lease.take(10)
    vectors = EdgeStore.open(layout.edge_dir, lease=lease)
    try:
        yield layout, tantivy, vectors
    finally:
        vectors.close()


def tantivy_docs(tantivy: TantivyStore) -> dict[str, dict]:
    """Every stored document, by chunk id."""
    tantivy.index.reload()
    searcher = tantivy.index.searcher()
    hits = searcher.search(Query.all_query(), limit=max(searcher.num_docs, 1)).hits
    docs = {}
    for _, address in hits:
        doc = searcher.doc(address).to_dict()
        docs[doc["id"][0]] = {key: values[0] for key, values in doc.items()}
    return docs


def qdrant_points(vectors: EdgeStore) -> dict[str, dict]:
    """Every point's payload, by chunk id."""
    return {point.pop("id"): point for point in vectors.points()}


def symbols_by_path(docs: dict[str, dict], path_key: str = "path", symbol_key: str = "symbol") -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for doc in docs.values():
        found.setdefault(doc[path_key], set()).add(doc[symbol_key])
    return found


def assert_stores_agree(docs: dict[str, dict], points: dict[str, dict]) -> None:
    """A point for every chunk with a vector (tasks.chunk.has_vector: all but inherent impls and the
    windows past an item's sixth) and no other, each with its chunk's path and kind."""
    vectored = {i: d for i, d in docs.items() if has_vector(d["kind"], d["name"], d["window"])}
    assert set(vectored) == set(points)
    assert {i: (p["path"], p["kind"]) for i, p in points.items()} == {i: (d["path"], d["kind"]) for i, d in vectored.items()}


def start_index(crate: Path, *args: str, env: dict | None = None, freeze_at: str | None = None,
                stderr=subprocess.PIPE) -> subprocess.Popen:  # fmt: skip
    """`rci index` in the background; with `freeze_at`, it stops itself there (tasks/checkpoints.py)."""
    environment = {**(env or os.environ)}
    if freeze_at:
        environment["RCI_FREEZE_AT"] = freeze_at
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "rci"), "index", str(crate), *args],
        env=environment, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip


def wait_until_frozen(run: subprocess.Popen, point: str) -> list:
    """Until the run has stopped itself at `point`; its processes (children) then."""
    process = psutil.Process(run.pid)
    deadline = time.monotonic() + 180
    while process.status() != psutil.STATUS_STOPPED:
        assert run.poll() is None, f"the run ended before {point}: {run.communicate()[1]}"
        assert time.monotonic() < deadline, f"the run never reached {point}"
        time.sleep(0.02)
    return process.children(recursive=True)


def run_until_frozen(crate: Path, point: str, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, list]:
    run = start_index(crate, *args, env=env, freeze_at=point)
    return run, wait_until_frozen(run, point)


def assert_all_gone(processes: list) -> None:
    _, alive = psutil.wait_procs(processes, timeout=10)
    for orphan in alive:
        orphan.kill()
    assert not alive, f"left running after the run: {[' '.join(p.cmdline()[:4]) for p in alive]}"


def loopback_listeners(pid: int) -> list[int]:
    """The loopback TCP ports this process listens on: without PREFECT_API_URL, a run serves
    its own Prefect API from a thread (flows/temporary_server.py)."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return [c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1"]


def wait_for_listener(run: subprocess.Popen, timeout: float = 60) -> int:
    """The port of the run's own Prefect server, once it listens."""
    deadline = time.monotonic() + timeout
    while run.poll() is None and time.monotonic() < deadline:
        ports = loopback_listeners(run.pid)
        if ports:
            return ports[0]
        time.sleep(0.05)
    raise AssertionError("the run never listened on a loopback port (its Prefect server)")


def assert_nothing_listens(port: int) -> None:
    import socket

    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on port {port}"


def kill(run: subprocess.Popen, children: list) -> None:
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert_all_gone(children)


def stores_of(crate: Path, data_dir: Path) -> tuple[dict, dict]:
    with open_stores(crate, data_dir) as (_, tantivy, vectors):
        return tantivy_docs(tantivy), qdrant_points(vectors)


def assert_same_as_a_clean_index(crate: Path, data_dir: Path, tmp_path: Path) -> None:
    docs, points = stores_of(crate, data_dir)
    assert_stores_agree(docs, points)
    clean_dir = tmp_path / "clean-data"
    done = rci("index", str(crate), env={"RCI_DATA_DIR": str(clean_dir)})
    assert done.returncode == 0, done.stderr
    clean_docs, _ = stores_of(crate, clean_dir)
    assert set(docs) == set(clean_docs)
    assert {i: d["symbol"] for i, d in docs.items()} == {i: d["symbol"] for i, d in clean_docs.items()}
    status = rci("status", str(crate), "--json", env={"RCI_DATA_DIR": str(data_dir)})
    assert status.returncode == 0 and '"stores_agree": true' in status.stdout, status.stdout + status.stderr


def artifacts_of(flow_run_id) -> list[dict]:
    """The artifacts a flow run made, as the Prefect API returns them (its UI shows the same)."""
    import httpx

    response = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}}, timeout=10,
    )  # fmt: skip
    response.raise_for_status()
    return response.json()


TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DEPLOYMENTS = {"index": "index-codebase/index", "nightly-reindex": "nightly-reindex/nightly-reindex",
               "force-reindex": "force-reindex/force-reindex"}  # fmt: skip


def start_deployment(name: str, parameters: dict):
    """What the UI's "Run" button does: a flow run from the deployment, with the form's values."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENTS[name])
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id


def wait_for(run_id, timeout: float = 300):
    """The flow run once it has ended."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.type.value in TERMINAL:
                return run
            time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout} s")


def children_of(run_id) -> list:
    """The flow runs linked to a run as its subflows (the UI's "Subflow runs")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )


def taken_span(run) -> tuple:
    """From when a worker took the run (its Pending state) to when it ended: the time the run
    held one of the worker's slots, start-up of its process included."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run.id)
    return min(state.timestamp for state in states if state.type.value == "PENDING"), run.end_time


def run_logs(run_id, until=bool, timeout: float = 30) -> list:
    """A run's logs, oldest first. They reach the server in batches, so this waits (up to
    `timeout`) until `until(logs)` holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        if until(logs) or time.monotonic() > deadline:
            return logs
        time.sleep(1)


def logs_of(run_id, containing: str) -> list[str]:
    """A run's log messages, once one of them contains `containing` (or after 30 s)."""
    return [log.message for log in run_logs(run_id, lambda logs: any(containing in log.message for log in logs))]


def held_span(run) -> tuple:
    """When a run took the code base's lock and when it released it, from its logs."""
    said = lambda logs, prefix: [log.timestamp for log in logs if log.message.startswith(prefix)]  # noqa: E731
    logs = run_logs(run.id, lambda logs: said(logs, "holding ") and said(logs, "released "))
    taken, released = said(logs, "holding "), said(logs, "released ")
    assert len(taken) == 1 and len(released) == 1, [log.message for log in logs]
    return taken[0], released[0]
