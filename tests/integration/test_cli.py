"""`rci` as a user runs it: exit codes, one-line errors, the summary, search and status output."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAKE_AWS_KEY, rci

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

# Prefect's console format is "12:00:00.000 | INFO    | ...": none of that, and no traceback.
NOISE = re.compile(
    r"Traceback|\|\s*(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*\||Task run|Flow run|prefect\.|Error logging to API"
)


def assert_one_line_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert result.stdout == ""


def test_missing_path(tmp_path, data_dir):
    result = rci("index", str(tmp_path / "nope"))
    assert_one_line_error(result, "does not exist")
    assert not data_dir.exists()


def test_file_instead_of_directory(demo_crate, data_dir):
    result = rci("index", str(demo_crate / "src" / "lib.rs"))
    assert_one_line_error(result, "is a file, not a directory")
    assert not data_dir.exists()


def test_directory_without_rust_files(tmp_path, data_dir):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("# notes\n")
    (tmp_path / "docs" / "target").mkdir()
    (tmp_path / "docs" / "target" / "gen.rs").write_text("fn x() {}\n")  # target/ never counts
    result = rci("index", str(tmp_path / "docs"))
    assert_one_line_error(result, "no .rs files to index")
    assert not data_dir.exists()


def test_unknown_mode_is_refused(demo_crate, data_dir):
    assert_one_line_error(rci("index", str(demo_crate), "--mode", "turbo"), "unknown indexing mode 'turbo'")
    assert not data_dir.exists()


def test_search_before_index(demo_crate, data_dir):
    assert_one_line_error(rci("search", str(demo_crate), "tensor"), "has no index yet", "rci index")


def test_index_search_status_end_to_end(demo_crate, data_dir):
    result = rci("index", str(demo_crate))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert not NOISE.search(out + result.stderr), out + result.stderr
    assert result.stderr == ""  # no progress bar drawn when stderr is not a terminal
    assert f"Indexed {demo_crate}" in out
    assert re.search(r"^  mode     (sequential|parallel|pipeline): .+$", out, re.M)  # what recommend() picked, and why
    assert "11 found: 9 indexed, 0 unchanged, 0 deleted, 5 skipped" in out
    assert "45 written (44 embedded, 0 from the cache, 1 in BM25 alone), 45 in the index" in out
    assert re.search(r"^  memory   peak RSS [\d,]+ MB$", out, re.M)
    assert "skipped  src/latin1.rs: not valid UTF-8 (byte 0xe9 on line 1); save it as UTF-8" in out
    assert "skipped  src/blob.rs: binary file (NUL bytes), not Rust source" in out
    assert "warning  src/broken.rs: syntax errors at line 6, 7" in out
    assert "secret   src/config.rs:5 (AWS access key id) withheld from both indexes" in out
    assert FAKE_AWS_KEY not in out

    text = rci("search", str(demo_crate), "retry an upload that failed", "--limit", "3")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"src/net\.rs:7-15  demo_tensor::net::retry_failed_upload  function  0\.\d{4}", lines[0])
    for line in lines:
        assert re.fullmatch(r"\S+:\d+-\d+  \S+  \S+  \d\.\d{4}", line), line

    as_json = rci("search", str(demo_crate), "HashMap entry or_insert", "--json", "-n", "5")
    results = json.loads(as_json.stdout)
    assert set(results[0]) == {"file", "start_line", "end_line", "symbol", "kind", "score", "snippet", "stale"}
    assert results[0]["stale"] is False
    assert results[0]["symbol"] == "demo_tensor::net::word_frequencies" and results[0]["file"] == "src/net.rs"
    assert "or_insert(0)" in results[0]["snippet"]

    for query in (FAKE_AWS_KEY, "access key of the test account"):
        found = rci("search", str(demo_crate), query, "--json", "-n", "50")
        assert found.returncode == 0 and FAKE_AWS_KEY not in found.stdout

    for odd in ("std::io::Error", "Vec<T>", "fn foo(", "((]]", '"'):
        assert rci("search", str(demo_crate), odd).returncode == 0, odd
    assert_one_line_error(rci("search", str(demo_crate), "  "), "query is empty")

    status = json.loads(rci("status", str(demo_crate), "--json").stdout)
    assert status["indexed"] and status["stores_agree"] and status["files"] == 9
    assert status["chunks_tantivy"] == status["chunks_qdrant"] + 1 > 40  # the inherent impl has no vector
    assert status["last_run"]["files_indexed"] == 9
    plain = rci("status", str(demo_crate))
    assert "stores agree  yes" in plain.stdout and plain.returncode == 0

    again = rci("index", str(demo_crate), "--json")
    stats = json.loads(again.stdout)
    assert stats["mode"] == "up-to-date" and stats["chunks_embedded"] == 0 and stats["files_unchanged"] == 9
    assert stats["chunks_total"] == 45
    assert {s["path"] for s in stats["files_skipped"]} >= {"src/latin1.rs", "src/blob.rs"}  # still reported
    plain = rci("index", str(demo_crate))
    assert plain.stdout.startswith(f"Up to date {demo_crate}: nothing changed since the last run")

    (demo_crate / "src" / "net.rs").touch()  # same content, new mtime: the flow runs, embeds nothing
    touched = json.loads(rci("index", str(demo_crate), "--json").stdout)
    assert touched["mode"] != "up-to-date" and touched["chunks_embedded"] == 0 and touched["files_indexed"] == 0

    forced = rci("index", str(demo_crate), "--force", "--mode", "sequential")
    assert forced.returncode == 0 and f"Rebuilt {demo_crate}" in forced.stdout
    assert "45 written (0 embedded, 44 from the cache, 1 in BM25 alone)" in forced.stdout


def test_without_a_prefect_server_the_output_is_still_clean(tmp_path, data_dir):
    """The README's path: no PREFECT_API_URL, the run serves Prefect's API itself (flows/temporary_server.py)."""
    crate = tmp_path / "tiny"
    (crate / "src").mkdir(parents=True)
    (crate / "src" / "lib.rs").write_text("/// Adds one.\npub fn add_one(x: u32) -> u32 { x + 1 }\n")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    result = rci("index", str(crate), only_env=env)
    assert result.returncode == 0, result.stderr
    assert not NOISE.search(result.stdout + result.stderr), result.stdout + result.stderr
    assert "1 found: 1 indexed" in result.stdout


def test_a_home_that_does_not_exist_yet_is_made_and_an_unwritable_prefect_home_is_one_line(tmp_path, data_dir):
    """Prefect makes its home without parents: a new user's HOME, not there yet, used to end in
    a 30 s timeout. Where no home can be made, the run says so in one line and writes nothing."""
    crate = tmp_path / "tiny"
    (crate / "src").mkdir(parents=True)
    (crate / "src" / "lib.rs").write_text("/// Adds one.\npub fn add_one(x: u32) -> u32 { x + 1 }\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["HOME"] = str(tmp_path / "new-user")
    made = rci("index", str(crate), only_env=env)
    assert made.returncode == 0, made.stderr
    assert "1 found: 1 indexed" in made.stdout
    assert (tmp_path / "new-user" / ".prefect").is_dir()
    assert not NOISE.search(made.stdout + made.stderr), made.stdout + made.stderr

    shutil.rmtree(data_dir)
    env["PREFECT_HOME"] = "/proc/rci-no-such-folder/prefect"
    refused = rci("index", str(crate), only_env=env)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0] == (
        "error: cannot create Prefect's home folder /proc/rci-no-such-folder/prefect; set PREFECT_HOME to a "
        "folder you can write, or PREFECT_API_URL to a Prefect server"
    )
    assert not any(folder.name.startswith("tiny") for folder in data_dir.glob("*")), list(data_dir.glob("*"))


def test_sigterm_unwinds_a_run_like_ctrl_c_and_its_prefect_server_goes_with_it(demo_crate, data_dir, tmp_path):
    """SIGTERM (`kill`, a service manager, a CI timeout) unwinds the run like Ctrl-C: the
    Prefect API it served stops answering and none of its processes run on."""
    import signal

    from tests.integration.helpers import assert_all_gone, assert_nothing_listens, wait_for_listener

    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), RCI_PARSE_PROCESSES="2")
    run = subprocess.Popen(
        [str(Path(sys.executable).parent / "rci"), "index", str(demo_crate), "--reembed"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    port = wait_for_listener(run)
    children = psutil.Process(run.pid).children(recursive=True)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and "interrupted" in stderr, stderr
    assert_all_gone(children)
    assert_nothing_listens(port)


TEMPORARY_SERVER_SCRIPT = """
import psutil
import httpx
from prefect import flow
from flows.temporary_server import temporary_prefect_server

@flow
def hello():
    return "hello from a flow"

with temporary_prefect_server() as url:
    print(url)
    print(hello())
    print("processes started:", len(psutil.Process().children(recursive=True)))
try:
    httpx.get(url + "/health", timeout=2)
    print("server still up")
except httpx.HTTPError:
    print("server stopped")
"""


def test_without_an_api_url_the_temporary_server_runs_in_the_process_and_stops_with_the_run(tmp_path):
    """No second Python (about 200 MB) for the server; a flow runs against it; it stops after."""
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")
    result = subprocess.run(
        [sys.executable, "-c", TEMPORARY_SERVER_SCRIPT], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    url, greeting, processes, after = result.stdout.strip().splitlines()[-4:]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api", url)
    assert greeting == "hello from a flow"
    assert processes == "processes started: 0"
    assert after == "server stopped"


def test_a_configured_api_url_is_used_as_it_is():
    from flows.temporary_server import temporary_prefect_server

    with temporary_prefect_server() as url:
        assert url == os.environ["PREFECT_API_URL"]


def test_unknown_profile_is_a_usage_error(demo_crate, data_dir):
    result = rci("index", str(demo_crate), env={"RCI_PROFILE": "nope"})
    assert_one_line_error(result, "unknown profile 'nope'", "laptop")


def test_search_and_status_while_an_index_run_writes_the_code_base(demo_crate, data_dir):
    """The run has the vector store: a search answers from BM25 with a note, status says a run is
    in progress, and the run itself, resumed, ends well."""
    import signal

    from tests.integration.test_kills import run_until_frozen

    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    (demo_crate / "src" / "extra.rs").write_text("/// Added later.\npub fn added_later_fn() -> u8 { 7 }\n")
    run, _ = run_until_frozen(demo_crate, "write", "--force", "--mode", "sequential")
    try:
        started = time.monotonic()
        found = rci("search", str(demo_crate), "retry a failed upload", "-n", "3")
        assert time.monotonic() - started < 30
        assert found.returncode == 0, found.stderr
        assert found.stdout.splitlines()[0].startswith("src/net.rs:7-15  demo_tensor::net::retry_failed_upload")
        assert found.stderr.strip() == (
            "note: an index run is writing this code base's vectors; these results are BM25 only, "
            "vector results return when the run ends"
        )
        vector_only = rci("search", str(demo_crate), "send it again when it did not work", "--engine", "vector", "--json")
        assert vector_only.returncode == 0 and "BM25 only" in vector_only.stderr
        status = rci("status", str(demo_crate))
        assert status.returncode == 0, status.stderr
        assert re.search(r"^  running       flow run '.+' \(pid \d+ on .+\): index, [1-9]\d*/\d+ files", status.stdout, re.M), status.stdout
        assert "Qdrant embedded not counted" in status.stdout and "a run is in progress" in status.stdout
    finally:
        run.send_signal(signal.SIGCONT)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    after = rci("search", str(demo_crate), "added_later_fn returns seven", "--engine", "vector", "-n", "1")
    assert after.returncode == 0 and after.stderr == "" and "demo_tensor::extra::added_later_fn" in after.stdout
    status = rci("status", str(demo_crate))
    assert "running" not in status.stdout and "stores agree  yes" in status.stdout


def test_an_index_in_the_old_sharded_layout_asks_for_one_force_rebuild(demo_crate, data_dir):
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    (layout_dir,) = [p for p in data_dir.iterdir() if p.name.startswith("demo-crate-")]
    manifest = json.loads((layout_dir / "manifest.json").read_text())
    manifest["schema_version"] = 5  # what the sharded layout wrote
    (layout_dir / "manifest.json").write_text(json.dumps(manifest))
    (layout_dir / "qdrant" / "demo-crate" / "0000").mkdir(parents=True)
    (layout_dir / "qdrant" / "demo-crate" / "shards.json").write_text('{"dim": 384, "points": [45], "files": {}}')
    advice = f"rebuild it with `rci index {demo_crate} --force` (vectors of text the model has read before come from the embedding cache"
    for command in (["search", str(demo_crate), "retry"], ["index", str(demo_crate)]):
        if command[0] == "index":
            (demo_crate / "src" / "extra.rs").write_text("pub fn extra() {}\n")  # not up to date: the flow runs
        result = rci(*command)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "built by an older version (schema 5" in result.stderr and advice in result.stderr, result.stderr
    rebuilt = rci("index", str(demo_crate), "--force")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "46 written (1 embedded, 44 from the cache, 1 in BM25 alone)" in rebuilt.stdout
    assert not (layout_dir / "qdrant").exists() and (layout_dir / "qdrant-edge").is_dir()
