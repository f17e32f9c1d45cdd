"""`rci index` killed with SIGKILL at chosen moments, then run again: both stores hold the same
chunk ids as a clean index of the same files, and nothing of the killed run is left running.

RCI_FREEZE_AT (tasks/checkpoints.py) stops the run exactly at a named moment; the test then
sends a real SIGKILL, which no code of the run can see or handle.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import rci
from tests.integration.helpers import assert_stores_agree, open_stores, qdrant_points, tantivy_docs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def run_until_frozen(crate: Path, point: str, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, list]:
    environment = {**(env or os.environ), "RCI_FREEZE_AT": point}
    run = subprocess.Popen(
        [str(Path(sys.executable).parent / "rci"), "index", str(crate), *args],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    process = psutil.Process(run.pid)
    deadline = time.monotonic() + 180
    while process.status() != psutil.STATUS_STOPPED:
        assert run.poll() is None, f"the run ended before {point}: {run.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"the run never reached {point}"
        time.sleep(0.02)
    return run, process.children(recursive=True)


def kill(run: subprocess.Popen, children: list) -> None:
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=10)
    for orphan in alive:
        orphan.kill()
    assert not alive, f"left running after the SIGKILL: {[' '.join(p.cmdline()[:4]) for p in alive]}"


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


def test_a_first_run_killed_while_embedding_leaves_no_process_and_the_next_run_builds_it(demo_crate, data_dir, tmp_path):
    """Without PREFECT_API_URL: the run's own Prefect server and its parse workers die with it."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), RCI_PARSE_PROCESSES="2", RCI_FILE_BATCH_SIZE="2")
    run, children = run_until_frozen(demo_crate, "embed", "--mode", "pipeline", env=env)
    assert any("flows.temporary_server" in " ".join(c.cmdline()) for c in children)
    assert len(children) >= 3  # the server and two parse workers
    kill(run, children)
    again = rci("index", str(demo_crate), only_env=env)
    assert again.returncode == 0, again.stderr
    assert "45 in the index" in again.stdout
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)


@pytest.mark.parametrize("point", ["write", "commit:tantivy", "commit:vectors", "commit:manifest"])
def test_an_incremental_run_killed_midway_is_repaired_by_the_next(demo_crate, data_dir, tmp_path, point):
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    net = demo_crate / "src" / "net.rs"
    original = net.read_text()
    net.write_text(original.replace("word_frequencies", "count_words"))
    (demo_crate / "src" / "extra.rs").write_text("/// Added later.\npub fn added_later_fn() -> u8 { 7 }\n")
    (demo_crate / "src" / "backend.rs").unlink()
    run, children = run_until_frozen(demo_crate, point, "--mode", "sequential")
    kill(run, children)
    # Put one file back as it was: the killed run had already changed it in the stores.
    net.write_text(original)
    again = rci("index", str(demo_crate))
    assert again.returncode == 0, again.stderr
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)
    docs, _ = stores_of(demo_crate, data_dir)
    symbols = {d["symbol"] for d in docs.values()}
    assert "demo_tensor::net::word_frequencies" in symbols and "demo_tensor::net::count_words" not in symbols
    assert "demo_tensor::extra::added_later_fn" in symbols
    assert not any(d["path"] == "src/backend.rs" for d in docs.values())


def test_a_force_reindex_killed_in_bulk_mode_is_rebuilt_by_the_next_run(demo_crate, data_dir, tmp_path):
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    run, children = run_until_frozen(demo_crate, "write", "--force", "--mode", "sequential")
    kill(run, children)
    again = rci("index", str(demo_crate))
    assert again.returncode == 0, again.stderr
    assert "45 written (0 embedded, 45 from the cache)" in again.stdout  # rebuilt, nothing embedded
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)
    with open_stores(demo_crate, data_dir) as (layout, _, _):
        assert not layout.bulk_state_path.exists()
