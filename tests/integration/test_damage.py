"""A full disk and damaged state files: one line that says what to run, never a traceback; the
previous index still answers searches; the next run, once the cause is gone, completes."""

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from flows.index import index_codebase
from tasks import session
from tasks.disk_space import DiskFull, free_bytes
from tasks.settings import CodebaseLayout, load_settings
from tests.conftest import rci
from tests.integration.helpers import assert_stores_agree, open_stores, qdrant_points, stores_of, tantivy_docs

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_damaged_manifest_snapshot_and_cache_say_what_to_run_and_the_next_run_rebuilds(demo_crate, data_dir):
    first = rci("index", str(demo_crate))
    assert first.returncode == 0, first.stderr
    layout = CodebaseLayout.for_root(demo_crate, load_settings(data_dir=data_dir))
    for path, damage in [(layout.manifest_path, "truncated"), (layout.snapshot_path, "garbage")]:
        path.write_text(path.read_text()[:40] if damage == "truncated" else "not json {")
        line = one_error_line(rci("search", str(demo_crate), "word frequencies"))
        assert f"the index's {path.name} is damaged" in line and f"run `rci index {demo_crate}`" in line
        assert "from the embedding cache" in line
        assert one_error_line(rci("status", str(demo_crate))) == line
        again = rci("index", str(demo_crate))
        assert again.returncode == 0, again.stderr
        assert f"{path.name} was damaged" in again.stdout and "rebuilt the index from the embedding cache" in again.stdout
        assert "45 written (0 embedded, 44 from the cache, 1 in BM25 alone)" in again.stdout
        found = rci("search", str(demo_crate), "word frequencies", "-n", "1")
        assert found.returncode == 0 and "demo_tensor::net::word_frequencies" in found.stdout, found.stdout
    layout.cache_path.write_bytes(b"this is not a database" * 100)
    (demo_crate / "src" / "extra.rs").write_text("/// Added after the cache broke.\npub fn after_cache_fn() {}\n")
    again = rci("index", str(demo_crate))
    assert again.returncode == 0, again.stderr
    assert "the embedding cache was damaged" in again.stdout and "embeddings.sqlite.damaged" in again.stdout
    assert (layout.data_dir / "embeddings.sqlite.damaged").exists()
    docs, points = stores_of(demo_crate, data_dir)
    assert_stores_agree(docs, points)
    assert "demo_tensor::extra::after_cache_fn" in {d["symbol"] for d in docs.values()}


def mount_small_disk(folder: Path, megabytes: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)], capture_output=True)
    return mounted.returncode == 0


def test_a_full_disk_stops_the_run_before_it_writes_and_the_index_still_answers(demo_crate, tmp_path, monkeypatch):
    disk = tmp_path / "small-disk"
    if not mount_small_disk(disk, 128):  # the index, and the fused model (23 MB) in models/
        pytest.skip("cannot mount a small tmpfs here (needs root); test_no_space_left_while_writing covers ENOSPC")
    try:
        monkeypatch.setenv("RCI_DATA_DIR", str(disk))
        first = rci("index", str(demo_crate))
        assert first.returncode == 0, first.stderr
        filler = disk / "filler"
        subprocess.run(["fallocate", "-l", str(free_bytes(disk) - 512 * 1024), str(filler)], check=True)
        (demo_crate / "src" / "extra.rs").write_text("/// Added on a full disk.\npub fn full_disk_fn() {}\n")
        before = stores_of(demo_crate, disk)[0]

        for args in ([], ["--force"]):
            line = one_error_line(rci("index", str(demo_crate), *args))
            assert line.startswith("error: not enough free space for the index in ") and str(disk) in line
            assert "this run needs about" in line and "MB are free" in line
        found = rci("search", str(demo_crate), "word frequencies", "-n", "1")
        assert found.returncode == 0 and "demo_tensor::net::word_frequencies" in found.stdout, found.stderr
        assert "BM25 only until space is freed" in found.stderr  # the vector store stays closed
        filler.unlink()
        assert stores_of(demo_crate, disk)[0] == before  # nothing was written

        again = rci("index", str(demo_crate))
        assert again.returncode == 0, again.stderr
        docs, points = stores_of(demo_crate, disk)
        assert_stores_agree(docs, points)
        assert "demo_tensor::extra::full_disk_fn" in {d["symbol"] for d in docs.values()}
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        shutil.rmtree(disk, ignore_errors=True)


def test_no_space_left_while_writing_ends_the_run_with_one_line_and_the_next_run_completes(demo_crate, data_dir, monkeypatch):
    index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (layout, tantivy, _):
        snapshot_before = layout.snapshot_path.read_text()
        docs_before = tantivy_docs(tantivy)
    (demo_crate / "src" / "extra.rs").write_text("/// New.\npub fn extra_fn() {}\n")

    def no_space(index, batch):
        raise OSError(errno.ENOSPC, "No space left on device", str(layout.data_dir / "tantivy" / "x.idx"))

    monkeypatch.setattr(session, "write_batch", no_space)
    with pytest.raises(DiskFull) as failure:
        index_codebase(directory=str(demo_crate))
    message = str(failure.value)
    assert message.startswith(f"the disk holding {layout.data_dir} is full (") and "free some space" in message
    assert "\n" not in message
    assert layout.snapshot_path.read_text() == snapshot_before
    found = rci("search", str(demo_crate), "word frequencies", "-n", "1")
    assert found.returncode == 0 and "demo_tensor::net::word_frequencies" in found.stdout, found.stderr

    monkeypatch.undo()
    monkeypatch.setenv("RCI_DATA_DIR", str(data_dir))
    index_codebase(directory=str(demo_crate))
    with open_stores(demo_crate) as (_, tantivy, vectors):
        docs = tantivy_docs(tantivy)
        assert_stores_agree(docs, qdrant_points(vectors))
    assert set(docs) - set(docs_before) and "demo_tensor::extra::extra_fn" in {d["symbol"] for d in docs.values()}
