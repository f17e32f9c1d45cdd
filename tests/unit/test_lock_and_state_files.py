"""The code base lock's holder record, damaged state files, and the free-space rules."""

import errno
import json
import os
import sqlite3

import pytest

from tasks import disk_space
from tasks.commit import damaged
from tasks.disk_space import DiskFull, is_disk_full, require_space, run_needs
from tasks.lock import codebase_lock, holder_of, run_in_progress


def test_a_clean_release_empties_the_lock_and_the_next_holder_takes_over_nothing(tmp_path):
    lock = tmp_path / "index.lock"
    taken_over = []
    with codebase_lock(lock, 0, "flow run 'first'", on_takeover=taken_over.append, flow_run_id="run-1"):
        info = json.loads(lock.read_text())
        assert info["pid"] == os.getpid() and info["flow_run_id"] == "run-1" and info["label"] == "flow run 'first'"
        assert run_in_progress(lock).startswith(f"flow run 'first' (pid {os.getpid()} on ")
    assert lock.read_text() == "" and run_in_progress(lock) is None
    with codebase_lock(lock, 0, "flow run 'second'", on_takeover=taken_over.append):
        pass
    assert taken_over == []


def test_a_holder_that_died_is_reported_to_the_run_that_takes_the_lock(tmp_path):
    lock = tmp_path / "index.lock"
    dead = {"pid": 4242, "host": "elsewhere", "label": "flow run 'killed'", "flow_run_id": "run-9", "since": "then"}
    lock.write_text(json.dumps(dead))  # what a SIGKILLed holder leaves: its record, no flock
    taken_over = []
    with codebase_lock(lock, 0, "flow run 'next'", on_takeover=taken_over.append):
        assert json.loads(lock.read_text())["label"] == "flow run 'next'"
    assert taken_over == [dead]
    assert holder_of(lock) == "another run"  # emptied again


@pytest.mark.parametrize(
    "content, reason",
    [(None, None), ('{"a": 1}', None), ("", "empty"), ('{"a": 1', "not valid JSON"), ("[1]", "not a JSON object")],
)
def test_damaged_says_why_a_state_file_cannot_be_read(tmp_path, content, reason):
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    found = damaged(path)
    assert found is None if reason is None else found.startswith(reason)


def test_a_run_that_would_not_fit_is_refused_in_one_line_naming_the_folder_and_the_space(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_space, "free_bytes", lambda path: 10 * disk_space.MB)
    require_space(tmp_path, 5 * disk_space.MB)
    require_space(tmp_path, 30 * disk_space.MB, freed_first=25 * disk_space.MB)  # a rebuild frees the old stores
    with pytest.raises(DiskFull) as refused:
        require_space(tmp_path, run_needs(4 * disk_space.MB))
    message = str(refused.value)
    assert f"in {tmp_path}: this run needs about 160 MB, 10 MB are free" in message and "\n" not in message
    assert refused.value.errno == errno.ENOSPC


def test_disk_full_is_recognised_however_a_library_reports_it():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(ValueError("Failed to write segment: No space left on device (os error 28)"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("disk full of ideas"))
