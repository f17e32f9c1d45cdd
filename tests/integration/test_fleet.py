"""The nightly run over a process work pool with two workers, on a real Prefect server: one
`index` run per code base, runs of different code bases at once on different workers, never
two at once on one code base, and a code base with a bad path failing alone."""

import itertools
import json
import os

import pytest
from prefect.client.orchestration import get_client

from flows.unresponsive_runs import AUTOMATION_NAME
from tests.conftest import build_demo_crate
from tests.integration.fleet import work_pool
from tests.integration.helpers import (
    artifacts_of,
    assert_stores_agree,
    children_of,
    held_span,
    start_deployment,
    stores_of,
    symbols_by_path,
    taken_span,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_the_nightly_run_fans_out_over_the_pools_workers(tmp_path):
    sources = tmp_path / "src"
    crates = [build_demo_crate(sources / name) for name in ("one", "two", "three", "four")]
    gone = sources / "gone" / "demo_crate"  # registered, then deleted
    data = tmp_path / "data"  # one data root for every worker: the shared storage of a fleet
    env = {
        **os.environ,
        "RCI_DATA_DIR": str(data),
        "RCI_CODEBASES": json.dumps([str(c) for c in crates] + [str(gone)]),
        "RCI_ALLOWED_ROOTS": json.dumps([str(sources)]),
        "RCI_LOCK_WAIT_SECONDS": "300",
    }
    with work_pool(env, index_workers=2, logs=tmp_path) as workers:
        with get_client(sync_client=True) as client:
            form = client.read_deployment_by_name("force-reindex/force-reindex").parameter_openapi_schema
            assert client.read_automations_by_name(AUTOMATION_NAME)  # set up by prefect.yaml's build step
        assert f"Registered: {', '.join(str(c) for c in crates)}, {gone}." in form["properties"]["directory"]["description"]
        again = start_deployment("index", {"directory": str(crates[0])})  # the same code base, from the UI
        nightly = wait_for(start_deployment("nightly-reindex", {}), timeout=600)
        again = wait_for(again)

    assert nightly.state.type.value == "FAILED"
    assert "1 of 5 code bases failed" in nightly.state.message and f"{gone}: " in nightly.state.message
    assert "does not exist" in nightly.state.message
    children = {run.parameters["directory"]: run for run in children_of(nightly.id)}
    assert set(children) == {str(c) for c in crates} | {str(gone)}
    assert children.pop(str(gone)).state.type.value == "FAILED"
    assert [run.state.type.value for run in children.values()] == ["COMPLETED"] * 4
    assert all({"rust-code-index", "nightly"} <= set(run.tags) for run in children.values())  # one UI filter finds them
    assert again.state.type.value == "COMPLETED", again.state.message

    # Each code base's run went to whichever index worker took it; both workers took some,
    # and held runs of different code bases at once (a run's own Running span is ~3 s against
    # ~9 s of process start-up, so two Running spans need not overlap on a loaded machine).
    ran_on = {directory: run.labels["prefect.worker.name"] for directory, run in children.items()}
    assert set(ran_on.values()) == set(workers), ran_on
    spans = {run.id: taken_span(run) for run in children.values()}
    overlapping = [
        (a, b) for a, b in itertools.combinations(children.values(), 2)
        if spans[a.id][0] < spans[b.id][1] and spans[b.id][0] < spans[a.id][1]
    ]  # fmt: skip
    assert overlapping, {run.parameters["directory"]: spans[run.id] for run in children.values()}
    assert all(ran_on[a.parameters["directory"]] != ran_on[b.parameters["directory"]] for a, b in overlapping)
    # One code base, two runs (the nightly's and the UI's): their times on the index never overlap.
    first, second = sorted([held_span(children[str(crates[0])]), held_span(again)])
    assert first[1] <= second[0], (first, second)

    for crate in crates:
        docs, points = stores_of(crate, data)
        assert_stores_agree(docs, points)
        assert "demo_tensor::net::retry_failed_upload" in symbols_by_path(docs)["src/net.rs"]

    (table,) = [a for a in artifacts_of(nightly.id) if a["type"] == "table"]
    rows = {row["code base"]: row for row in json.loads(table["data"])}
    for crate in crates:
        row = rows[str(crate)]
        assert row["outcome"] == "indexed" and row["worker"] == ran_on[str(crate)], row
        assert " files indexed, " in row["summary"] and " in the index" in row["summary"], row
    assert rows[str(gone)]["outcome"] == "failed" and "does not exist" in rows[str(gone)]["summary"]


def test_a_nightly_run_no_worker_takes_gives_up_and_says_how_to_start_one(prefect_server, tmp_path, monkeypatch):
    """Run after the fan-out test leaves the pool and its deployments without workers."""
    from flows.deployed import index_work_pool, nightly_reindex

    if index_work_pool() is None:  # run alone: deploy to the pool first, with no worker
        with work_pool({**os.environ}, index_workers=0, logs=tmp_path):
            pass
    crate = build_demo_crate(tmp_path / "src" / "lonely")
    monkeypatch.setenv("RCI_CODEBASES", json.dumps([str(crate)]))
    monkeypatch.setenv("RCI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RCI_NIGHTLY_START_SECONDS", "10")
    state = nightly_reindex(return_state=True)
    assert state.is_failed()
    assert f"{crate}: no worker of work pool rci-process started it within 10 s" in state.message
    assert "prefect worker start --pool rci-process --work-queue index --limit 1" in state.message
    (child,) = children_of(state.state_details.flow_run_id)
    assert child.state.type.value == "CANCELLED" and not (tmp_path / "data").exists()
