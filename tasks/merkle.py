"""What changed since the last run: a Merkle tree over the files' content hashes.

Leaves are (relative path, size, mtime_ns, sha256). A file whose size and mtime match the
previous snapshot keeps its hash unread, so an unchanged rerun reads no file. Directory
nodes hash their children, the root hashes everything: equal roots mean nothing changed.
The snapshot is written atomically, and only after both stores have committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from tasks.records import FileIssue, SourceFile

SNAPSHOT_VERSION = 1
_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Leaf:
    rel_path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(slots=True)
class Snapshot:
    leaves: dict[str, Leaf] = field(default_factory=dict)

    @property
    def root_hash(self) -> str:
        return merkle_root(self.leaves.values())

    def without(self, rel_paths: Iterable[str]) -> Snapshot:
        drop = set(rel_paths)
        return Snapshot({path: leaf for path, leaf in self.leaves.items() if path not in drop})


@dataclass(slots=True)
class Diff:
    added: list[str]
    modified: list[str]
    deleted: list[str]
    unchanged: list[str]

    @property
    def to_index(self) -> list[str]:
        return sorted(self.added + self.modified)

    @property
    def to_remove(self) -> list[str]:
        """Files whose old chunks must leave both stores."""
        return sorted(self.modified + self.deleted)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def build_snapshot(files: Iterable[SourceFile], previous: Snapshot | None) -> tuple[Snapshot, list[FileIssue]]:
    """Leaves for the current files; files with the previous size and mtime are not re-read."""
    old = previous.leaves if previous else {}
    leaves: dict[str, Leaf] = {}
    issues: list[FileIssue] = []
    for source in files:
        known = old.get(source.rel_path)
        if known is not None and known.size == source.size and known.mtime_ns == source.mtime_ns:
            leaves[source.rel_path] = known
            continue
        try:
            digest = hash_file(source.abs_path)
        except OSError as error:
            issues.append(FileIssue(source.rel_path, f"unreadable: {error.strerror or error}"))
            continue
        leaves[source.rel_path] = Leaf(source.rel_path, source.size, source.mtime_ns, digest)
    return Snapshot(leaves), issues


def diff(previous: Snapshot | None, current: Snapshot) -> Diff:
    old = previous.leaves if previous else {}
    if previous is not None and previous.root_hash == current.root_hash:
        return Diff([], [], [], sorted(current.leaves))
    added, modified, unchanged = [], [], []
    for path, leaf in current.leaves.items():
        before = old.get(path)
        if before is None:
            added.append(path)
        elif before.sha256 != leaf.sha256:
            modified.append(path)
        else:
            unchanged.append(path)
    deleted = [path for path in old if path not in current.leaves]
    return Diff(sorted(added), sorted(modified), sorted(deleted), sorted(unchanged))


def merkle_root(leaves: Iterable[Leaf]) -> str:
    """Hash of the directory tree: each folder hashes its children's names and hashes."""
    tree: dict = {}
    for leaf in leaves:
        node = tree
        *folders, name = leaf.rel_path.split("/")
        for folder in folders:
            node = node.setdefault(folder + "/", {})
        node[name] = leaf.sha256
    # Iterative post-order over folders: deep trees cannot overflow the stack.
    stack: list[tuple[dict, bool]] = [(tree, False)]
    hashes: dict[int, str] = {}
    while stack:
        node, expanded = stack.pop()
        if not expanded:
            stack.append((node, True))
            stack.extend((child, False) for child in node.values() if isinstance(child, dict))
            continue
        digest = hashlib.sha256()
        for name in sorted(node):
            child = node[name]
            digest.update(f"{name}\x00{hashes[id(child)] if isinstance(child, dict) else child}\n".encode())
        hashes[id(node)] = digest.hexdigest()
    return hashes[id(tree)]


def load_snapshot(path: Path) -> Snapshot | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable or torn: treated as no snapshot, so everything is indexed again
    if data.get("version") != SNAPSHOT_VERSION:
        return None
    return Snapshot({leaf["rel_path"]: Leaf(**leaf) for leaf in data.get("leaves", [])})


def save_snapshot(path: Path, snapshot: Snapshot) -> None:
    payload = {
        "version": SNAPSHOT_VERSION,
        "root_hash": snapshot.root_hash,
        "leaves": [asdict(leaf) for _, leaf in sorted(snapshot.leaves.items())],
    }
    write_atomic(Path(path), json.dumps(payload, separators=(",", ":")))


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_snapshot(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
