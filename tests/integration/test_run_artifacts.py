"""What a run shows in the Prefect UI, read back through the real server's API: a progress
artifact updated per batch, a log line per batch, and a summary artifact with the figures."""

import re

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

import prefect.artifacts
from flows.index import index_codebase
from tests.integration.helpers import artifacts_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def test_a_run_shows_its_progress_per_batch_its_batches_and_a_summary(demo_crate, data_dir, monkeypatch):
    updates: list[float] = []
    real_update = prefect.artifacts.update_progress_artifact

    def recording(artifact_id, progress, description=None, **kwargs):  # the real call, recorded
        updates.append(progress)
        return real_update(artifact_id, progress, description=description, **kwargs)

    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact", recording)
    monkeypatch.setattr("flows.run_artifacts.UPDATE_SECONDS", 0.0)
    monkeypatch.setenv("RCI_FILE_BATCH_SIZE", "2")
    state = index_codebase(directory=str(demo_crate), indexing_mode="pipeline", return_state=True)
    assert state.is_completed(), state.message
    stats = state.result()
    run_id = state.state_details.flow_run_id

    assert len(updates) >= 3 and updates == sorted(updates) and updates[-1] == 100.0
    assert any(0 < value < 100 for value in updates)  # seen part-way through, not only at the end
    found = {a["type"]: a for a in artifacts_of(run_id)}
    assert found["progress"]["data"] == 100.0
    done = re.search(r"(\d+)/(\d+) files, (\d+)/(\d+) chunks", found["progress"]["description"])
    assert done and done[1] == done[2] and int(done[1]) >= stats.files_indexed and done[3] == done[4] == "44"  # chunks with a vector

    summary = found["markdown"]["data"]
    assert f"{stats.chunks_written:,} written ({stats.chunks_embedded:,} embedded" in summary
    assert "## Seconds per stage" in summary and "| embed |" in summary
    assert "## Skipped files" in summary and "`src/blob.rs`: binary" in summary
    assert "## Secrets withheld from both indexes" in summary and "`src/config.rs:5 (AWS access key id)`" in summary
    assert "AKIA" not in summary

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        shown_state = client.read_flow_run(run_id).state  # what the UI shows on the run
    assert shown_state.is_completed() and shown_state.message == stats.headline()
    assert "45 in the index" in shown_state.message
    batches = [log.message for log in logs if log.message.startswith("batch: ")]
    assert len(batches) >= 3 and all(" files, " in line and " from the cache), " in line for line in batches)

    again = index_codebase(directory=str(demo_crate), return_state=True)  # nothing changed: done, not 0%
    (shown,) = [a for a in artifacts_of(again.state_details.flow_run_id) if a["type"] == "progress"]
    assert shown["data"] == 100.0 and shown["description"].endswith(": no file changed since the last run")
