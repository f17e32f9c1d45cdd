"""Deployments against a real Prefect server: served by `rci serve`, started through the API as
the UI starts them, with good and bad parameters, overlapping runs, and a nightly run."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from flows.temporary_server import stop_process
from tests.conftest import build_demo_crate
from tests.integration.helpers import (
    DEPLOYMENTS,
    artifacts_of,
    assert_stores_agree,
    children_of,
    held_span,
    logs_of,
    open_stores,
    qdrant_points,
    start_deployment as start,
    tantivy_docs,
    wait_for,
)

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """`rci serve` in a subprocess: two registered code bases (one of which will vanish), one allowed root."""
    base = tmp_path_factory.mktemp("served")
    alpha = build_demo_crate(base / "alpha")
    beta = build_demo_crate(base / "beta")
    allowed = base / "allowed"
    allowed.mkdir()
    gamma = build_demo_crate(allowed)
    env = {
        **os.environ,
        "RCI_DATA_DIR": str(base / "data"),
        "RCI_CODEBASES": json.dumps([str(alpha), str(beta)]),
        "RCI_ALLOWED_ROOTS": json.dumps([str(alpha), str(beta), str(allowed)]),
        "RCI_NIGHTLY_TIMEZONE": "Europe/Paris",
        "RCI_LOCK_WAIT_SECONDS": "300",
    }
    log = open(base / "serve.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "rci"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    names = {"index-codebase/index", "nightly-reindex/nightly-reindex", "force-reindex/force-reindex"}
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            found = {f"{client.read_flow(d.flow_id).name}/{d.name}" for d in client.read_deployments()}
            if names <= found:
                break
            assert process.poll() is None, (base / "serve.log").read_text()
            time.sleep(1)
        else:
            raise AssertionError(f"deployments not served: {(base / 'serve.log').read_text()[-2000:]}")
    yield {"env": env, "alpha": alpha, "beta": beta, "gamma": gamma, "allowed": allowed, "base": base}
    served_until = (base / "serve.log").stat().st_size
    stop_process(process, timeout=30)
    log.close()
    said = (base / "serve.log").read_bytes()[served_until:].decode(errors="replace")  # SIGTERM: Prefect's lines only
    assert "SIGTERM received" in said and "never awaited" not in said and "Traceback" not in said, said[-2000:]


def deployment(client, name: str):
    return client.read_deployment_by_name(DEPLOYMENTS[name])


def stores_of(served, crate):
    """Both stores' contents and the snapshot's files, read after the run released them."""
    with open_stores(crate, data_dir=served["base"] / "data") as (layout, tantivy, qdrant):
        snapshot = json.loads(layout.snapshot_path.read_text())
        return {
            "tantivy": tantivy_docs(tantivy),
            "qdrant": qdrant_points(qdrant),
            "snapshot": sorted(leaf["rel_path"] for leaf in snapshot["leaves"]),
        }


def test_the_form_the_ui_shows(served):
    with get_client(sync_client=True) as client:
        schema = deployment(client, "force-reindex").parameter_openapi_schema
        nightly = deployment(client, "nightly-reindex")
    props = schema["properties"]
    assert set(props) == {"directory", "indexing_mode", "reembed"} and schema["required"] == ["directory"]
    assert "RCI_ALLOWED_ROOTS" in props["directory"]["description"]
    assert f"Registered: {served['alpha']}, {served['beta']}." in props["directory"]["description"]
    assert "enum" not in props["directory"]  # with allowed roots a typed path stays possible
    assert props["indexing_mode"]["default"] == "auto" and "recommend()" in props["indexing_mode"]["description"]
    assert props["reembed"]["default"] is False and "embedding cache" in props["reembed"]["description"]
    enum = schema["definitions"]["IndexingMode"]["enum"]
    assert enum == ["auto", "sequential", "parallel", "pipeline"]
    assert len(nightly.schedules) == 1
    assert nightly.schedules[0].schedule.cron == "0 3 * * *"
    assert nightly.schedules[0].schedule.timezone == "Europe/Paris"
    assert nightly.schedules[0].active
    # The server's scheduler turns the cron into runs (none ever came with SQLAlchemy 2.1).
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline, upcoming = time.monotonic() + 60, []
    while not upcoming and time.monotonic() < deadline:
        time.sleep(1)
        with get_client(sync_client=True) as client:
            upcoming = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])))
    assert upcoming and all(run.state.type.value == "SCHEDULED" and run.auto_scheduled for run in upcoming)
    paris = [run.expected_start_time.in_timezone("Europe/Paris") for run in upcoming]
    assert all((t.hour, t.minute) == (3, 0) for t in paris), paris


def test_force_reindex_started_like_the_ui(served):
    crate = served["gamma"]
    first = wait_for(start("index", {"directory": str(crate)}))
    assert first.state.type.value == "COMPLETED", first.state.message
    (crate / "src" / "net.rs").write_text("/// Sends a ping.\npub fn send_ping() {}\n")
    run = wait_for(start("force-reindex", {"directory": str(crate), "indexing_mode": "pipeline"}))
    assert run.state.type.value == "COMPLETED", run.state.message
    contents = stores_of(served, crate)
    symbols = {d["symbol"] for d in contents["tantivy"].values() if d["path"] == "src/net.rs"}
    assert symbols == {"demo_tensor::net::send_ping"}
    assert_stores_agree(contents["tantivy"], contents["qdrant"])
    assert "src/net.rs" in contents["snapshot"]


@pytest.mark.parametrize(
    "parameters, words",
    [
        ({"directory": "/etc"}, "outside the allowed roots"),
        ({"directory": "/no/such/folder"}, "does not exist"),
    ],
)
def test_bad_parameters_fail_at_validation_and_touch_nothing(served, parameters, words):
    data = served["base"] / "data"
    before = sorted(p.name for p in data.iterdir()) if data.exists() else []
    run = wait_for(start("force-reindex", parameters))
    assert run.state.type.value == "FAILED" and words in run.state.message
    said = [line for line in logs_of(run.id, words) if words in line]
    assert said and not any("Traceback" in line for line in said), "\n=====\n".join(said)
    after = sorted(p.name for p in data.iterdir()) if data.exists() else []
    assert after == before


def test_unknown_mode_is_refused_before_a_run_exists(served):
    with pytest.raises(Exception, match="indexing_mode|Validation"):
        start("force-reindex", {"directory": str(served["gamma"]), "indexing_mode": "turbo"})


def test_two_runs_on_one_code_base_never_interleave(served):
    crate = served["gamma"]
    runs = [start("force-reindex", {"directory": str(crate)}) for _ in range(2)]
    finished = [wait_for(run_id) for run_id in runs]
    assert [r.state.type.value for r in finished] == ["COMPLETED", "COMPLETED"], [r.state.message for r in finished]
    # Each run logs when it takes the code base and when it lets go: those spans never overlap.
    spans = sorted(held_span(run) for run in finished)
    assert spans[0][1] <= spans[1][0], spans
    contents = stores_of(served, crate)
    assert contents["tantivy"]
    assert_stores_agree(contents["tantivy"], contents["qdrant"])
    on_disk = sorted(p.relative_to(crate).as_posix() for p in crate.rglob("*.rs") if _indexable(crate, p))
    assert contents["snapshot"] == on_disk


def _indexable(crate: Path, path: Path) -> bool:
    rel = path.relative_to(crate).as_posix()
    return not (path.is_symlink() or rel.startswith(("target/", ".aws/")) or rel in (
        "generated.rs", "gen/other.rs", "src/scratch_notes.rs", "src/latin1.rs", "src/blob.rs"))  # fmt: skip


def test_nightly_indexes_every_code_base_and_names_the_one_that_failed(served):
    served["beta"].rename(served["beta"].with_name("beta-moved"))  # a registered code base vanished
    try:
        run = wait_for(start("nightly-reindex", {}), timeout=600)
    finally:
        served["beta"].with_name("beta-moved").rename(served["beta"])
    assert run.state.type.value == "FAILED"
    assert "1 of 2 code bases failed" in run.state.message and str(served["beta"]) in run.state.message
    assert "does not exist" in run.state.message
    contents = stores_of(served, served["alpha"])
    assert contents["tantivy"]
    assert_stores_agree(contents["tantivy"], contents["qdrant"])
    # The vanished code base's run has its name and says why in its log; the nightly run ends
    # without Prefect's traceback of a state it cannot resolve.
    children = {c.name: c for c in children_of(run.id)}
    assert sorted(c.state.type.value for c in children.values()) == ["COMPLETED", "FAILED"]
    assert all({"rust-code-index", "nightly"} <= set(c.tags) for c in children.values())  # one UI filter finds them
    assert f"{served['beta']}: {served['beta']} does not exist" in run.state.message
    said = logs_of(children[f"nightly: {served['beta']}"].id, f"{served['beta']} does not exist")
    assert any(f"{served['beta']} does not exist" in line for line in said), said
    assert "Unexpected result for failed state" not in (served["base"] / "serve.log").read_text()
    (table,) = [a for a in artifacts_of(run.id) if a["type"] == "table"]
    rows = {row["code base"]: row for row in json.loads(table["data"])}
    alpha = rows[str(served["alpha"])]
    assert alpha["outcome"] == "indexed" and alpha["worker"] == "this run"
    assert re.search(r"\d+ files indexed, .* [1-9]\d* in the index", alpha["summary"]), alpha
    assert rows[str(served["beta"])]["outcome"] == "failed" and "does not exist" in rows[str(served["beta"])]["summary"]
    (indexed,) = [c for c in children.values() if c.state.type.value == "COMPLETED"]
    summary = [a for a in artifacts_of(indexed.id) if a["type"] == "markdown"]
    assert len(summary) == 1 and f"`{served['alpha']}`" in summary[0]["data"]


def test_the_mcp_tool_index_codebase_runs_through_the_served_deployment(served):
    import anyio

    from tests.integration.test_mcp import call, session

    crate = served["alpha"]
    (crate / "src" / "served.rs").write_text("/// Indexed through the served deployment.\npub fn through_the_deployment() {}\n")

    async def scenario():
        extra = {k: served["env"][k] for k in ("RCI_CODEBASES", "RCI_ALLOWED_ROOTS")}
        async with session(served["base"] / "data", **extra) as client:
            answer = await call(client, "index_codebase", directory=str(crate))
            assert answer["via"] == "deployment index-codebase/index" and answer["state"] == "Completed"
            found = await call(client, "find_definition", directory=str(crate), symbol="through_the_deployment", exact=True)
            assert [i["symbol"] for i in found["items"]] == ["demo_tensor::served::through_the_deployment"]
            return answer["flow_run"]

    flow_run = anyio.run(scenario)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [flow_run]}))
    assert [r.state.type.value for r in runs] == ["COMPLETED"] and runs[0].parameters["directory"] == str(crate)
