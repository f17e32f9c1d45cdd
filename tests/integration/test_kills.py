"""`rci index` killed with SIGKILL at chosen moments, then run again: both stores hold the same
chunk ids as a clean index of the same files, and nothing of the killed run is left running.

RCI_FREEZE_AT (tasks/checkpoints.py) stops the run exactly at a named moment; the test then
sends a real SIGKILL, which no code of the run can see or handle.
"""

import os

import pytest

from tests.conftest import rci
from tests.integration.helpers import (
    assert_nothing_listens,
    assert_same_as_a_clean_index,
    kill,
    loopback_listeners,
    open_stores,
    run_until_frozen,
    stores_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_a_first_run_killed_while_embedding_leaves_no_process_and_the_next_run_builds_it(demo_crate, data_dir, tmp_path):
    """Without PREFECT_API_URL: the run's own Prefect server (in its process) and its parse
    workers die with it."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), RCI_PARSE_PROCESSES="2", RCI_FILE_BATCH_SIZE="2")
    run, children = run_until_frozen(demo_crate, "embed", "--mode", "pipeline", env=env)
    ports = loopback_listeners(run.pid)
    assert ports and len(children) >= 2  # its Prefect server listens; two parse workers
    kill(run, children)
    assert_nothing_listens(ports[0])
    again = rci("index", str(demo_crate), only_env=env)
    assert again.returncode == 0, again.stderr
    assert "45 in the index" in again.stdout
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)


def test_incremental_runs_killed_one_after_another_at_each_moment_are_repaired_by_the_next(demo_crate, data_dir, tmp_path):
    """Four runs in a row, each SIGKILLed at another moment of writing or committing, each
    finding what the ones before it left; then one run, and the index is a clean one."""
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    net = demo_crate / "src" / "net.rs"
    original = net.read_text()
    (demo_crate / "src" / "backend.rs").unlink()
    for step, point in enumerate(["write", "commit:tantivy", "commit:vectors", "commit:manifest"]):
        net.write_text(original.replace("word_frequencies", f"count_words_{step}"))
        (demo_crate / "src" / f"extra_{step}.rs").write_text(f"/// Added by step {step}.\npub fn added_fn_{step}() {{}}\n")
        run, children = run_until_frozen(demo_crate, point, "--mode", "sequential")
        kill(run, children)
    # Put one file back as it was: the killed runs had already changed it in the stores.
    net.write_text(original)
    again = rci("index", str(demo_crate))
    assert again.returncode == 0, again.stderr
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)
    docs, _ = stores_of(demo_crate, data_dir)
    symbols = {d["symbol"] for d in docs.values()}
    assert "demo_tensor::net::word_frequencies" in symbols and not any("count_words" in s for s in symbols)
    assert {f"demo_tensor::extra_{step}::added_fn_{step}" for step in range(4)} <= symbols
    assert not any(d["path"] == "src/backend.rs" for d in docs.values())


def test_a_force_reindex_killed_in_bulk_mode_is_rebuilt_by_the_next_run(demo_crate, data_dir, tmp_path):
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    run, children = run_until_frozen(demo_crate, "write", "--force", "--mode", "sequential")
    kill(run, children)
    again = rci("index", str(demo_crate))
    assert again.returncode == 0, again.stderr
    assert "45 written (0 embedded, 44 from the cache, 1 in BM25 alone)" in again.stdout  # rebuilt, nothing embedded
    assert_same_as_a_clean_index(demo_crate, data_dir, tmp_path)
    with open_stores(demo_crate, data_dir) as (layout, _, _):
        assert not layout.bulk_state_path.exists()
