import json
import os
from pathlib import Path

import pytest

from tasks import merkle
from tasks.discover import discover
from tasks.merkle import Leaf, Snapshot, build_snapshot, diff, load_snapshot, merkle_root, save_snapshot
from tasks.records import FileIssue


def snapshot_of(root: Path, previous=None):
    return build_snapshot(discover(root, 1 << 20).files, previous)


def test_diff_finds_added_modified_deleted(tmp_path):
    for name in ("a.rs", "b.rs", "c.rs"):
        (tmp_path / name).write_text(f"fn {name[0]}() {{}}\n")
    first, issues = snapshot_of(tmp_path)
    assert issues == []
    (tmp_path / "a.rs").write_text("fn a_changed() {}\n")
    (tmp_path / "c.rs").unlink()
    (tmp_path / "d.rs").write_text("fn d() {}\n")
    second, _ = snapshot_of(tmp_path, first)
    changes = diff(first, second)
    assert (changes.added, changes.modified, changes.deleted, changes.unchanged) == (["d.rs"], ["a.rs"], ["c.rs"], ["b.rs"])
    assert changes.to_index == ["a.rs", "d.rs"]
    # Added files are cleared too: a run that died after writing some of their chunks is repaired.
    assert changes.to_remove == ["a.rs", "c.rs", "d.rs"]


def test_unchanged_size_and_mtime_skip_hashing(tmp_path, monkeypatch):
    (tmp_path / "a.rs").write_text("fn a() {}\n")
    first, _ = snapshot_of(tmp_path)
    hashed = []
    monkeypatch.setattr(merkle, "hash_file", lambda path: hashed.append(path) or "x")
    second, _ = snapshot_of(tmp_path, first)
    assert hashed == [] and second.leaves == first.leaves
    assert diff(first, second).unchanged == ["a.rs"]


def test_touched_but_identical_file_is_rehashed_and_unchanged(tmp_path):
    path = tmp_path / "a.rs"
    path.write_text("fn a() {}\n")
    first, _ = snapshot_of(tmp_path)
    os.utime(path, ns=(1, 1))
    second, _ = snapshot_of(tmp_path, first)
    assert second.leaves["a.rs"].mtime_ns == 1
    assert diff(first, second).unchanged == ["a.rs"]  # same content: nothing to reindex


def test_root_hash_changes_with_content_and_path_only():
    a = Leaf("src/a.rs", 1, 1, "h1")
    b = Leaf("src/b.rs", 1, 1, "h2")
    root = merkle_root([a, b])
    assert merkle_root([b, a]) == root
    assert merkle_root([a, Leaf("src/b.rs", 9, 9, "h2")]) == root  # size/mtime are not content
    assert merkle_root([a, Leaf("src/b.rs", 1, 1, "h3")]) != root
    assert merkle_root([a, Leaf("lib/b.rs", 1, 1, "h2")]) != root


def test_deep_trees_do_not_overflow():
    deep = "/".join(["d"] * 3000) + "/x.rs"
    assert len(merkle_root([Leaf(deep, 1, 1, "h")])) == 64


def test_unreadable_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "a.rs").write_text("fn a() {}\n")
    files = discover(tmp_path, 1 << 20).files
    (tmp_path / "a.rs").unlink()  # vanished between discovery and hashing
    snapshot, issues = build_snapshot(files, None)
    assert snapshot.leaves == {} and issues[0].rel_path == "a.rs" and "unreadable" in issues[0].reason


def test_snapshot_roundtrip_is_atomic_and_versioned(tmp_path):
    snapshot = Snapshot({"a.rs": Leaf("a.rs", 3, 4, "ab" * 32)})
    path = tmp_path / "snapshot.json"
    save_snapshot(path, snapshot)
    assert load_snapshot(path).leaves == snapshot.leaves
    assert json.loads(path.read_text())["root_hash"] == snapshot.root_hash
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.json"]  # no temporary file left behind
    path.write_text("{torn")
    assert load_snapshot(path) is None
    assert load_snapshot(tmp_path / "missing.json") is None


def test_failed_write_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    path = tmp_path / "snapshot.json"
    save_snapshot(path, Snapshot({"a.rs": Leaf("a.rs", 1, 1, "h")}))
    monkeypatch.setattr(merkle.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_snapshot(path, Snapshot({}))
    assert list(load_snapshot(path).leaves) == ["a.rs"]
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.json"]


def test_without_drops_failed_files():
    snapshot = Snapshot({"a.rs": Leaf("a.rs", 1, 1, "h"), "b.rs": Leaf("b.rs", 1, 1, "g")})
    assert list(snapshot.without(["b.rs"]).leaves) == ["a.rs"]


def test_parallel_hashing_gives_the_same_snapshot(tmp_path):
    for i in range(40):
        (tmp_path / f"f{i}.rs").write_text(f"fn f{i}() {{}}\n" * (i + 1) * 100)
    files = discover(tmp_path, 1 << 20).files
    one, _ = build_snapshot(files, None, workers=1)
    many, _ = build_snapshot(files, None, workers=4)
    assert one.leaves == many.leaves and one.root_hash == many.root_hash


def test_content_failures_are_remembered_until_the_content_changes(tmp_path):
    (tmp_path / "ok.rs").write_text("fn ok() {}\n")
    (tmp_path / "bad.rs").write_bytes(b"\xff\xfe")
    first, _ = snapshot_of(tmp_path)
    saved = first.after_run([FileIssue("bad.rs", "not valid UTF-8", retry=False)])
    assert list(saved.leaves) == ["ok.rs"] and saved.failed["bad.rs"].reason == "not valid UTF-8"
    path = tmp_path / "snap.json"
    save_snapshot(path, saved)
    reloaded = load_snapshot(path)
    assert reloaded.failed == saved.failed

    again, _ = snapshot_of(tmp_path, reloaded)
    unchanged = diff(reloaded, again)
    assert unchanged.nothing_to_do and unchanged.to_index == []
    assert [(i.rel_path, i.reason) for i in unchanged.still_failing] == [("bad.rs", "not valid UTF-8")]

    (tmp_path / "bad.rs").write_text("fn fixed() {}\n")
    fixed = diff(reloaded, snapshot_of(tmp_path, reloaded)[0])
    assert fixed.to_index == ["bad.rs"] and fixed.still_failing == []


def test_failures_that_may_pass_are_not_remembered():
    snapshot = Snapshot({"a.rs": Leaf("a.rs", 1, 1, "h")})
    saved = snapshot.after_run([FileIssue("a.rs", "unreadable: Permission denied", retry=True)])
    assert saved.leaves == {} and saved.failed == {}  # retried next run
