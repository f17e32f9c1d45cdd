"""What changed since the last run: a Merkle tree over the files' content hashes.

Leaves are (relative path, size, mtime_ns, sha256). A file whose size and mtime match the
previous snapshot keeps its hash unread, so an unchanged rerun reads no file. Directory
nodes hash their children, the root hashes everything: equal roots mean nothing changed.

The snapshot also remembers files whose content alone made them fail (binary, invalid
UTF-8) with the reason: they are not read again until their content changes, and every run
reports them. Failures that may pass (unreadable) are not remembered, so they are retried.
The snapshot is written atomically, and only after both stores have committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from tasks import checkpoints, stopping
from tasks.records import FileIssue, SourceFile

SNAPSHOT_VERSION = 2
_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Leaf:
    rel_path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that failed for a reason its content decides, remembered with that content's hash."""

    leaf: Leaf
    reason: str


@dataclass(slots=True)
class Snapshot:
    leaves: dict[str, Leaf] = field(default_factory=dict)  # files in both stores
    failed: dict[str, Failure] = field(default_factory=dict)

    @property
    def root_hash(self) -> str:
        return merkle_root([*self.leaves.values(), *(f.leaf for f in self.failed.values())])

    def without(self, rel_paths: Iterable[str]) -> Snapshot:
        drop = set(rel_paths)
        return Snapshot({p: leaf for p, leaf in self.leaves.items() if p not in drop}, dict(self.failed))

    def doubting(self, rel_paths: Iterable[str]) -> Snapshot:
        """These files count as changed (a run that died was changing them): the next diff
        rehashes them and finds them modified, or deleted when they are gone."""
        leaves = dict(self.leaves)
        failed = dict(self.failed)
        for path in rel_paths:
            if path in leaves or path in failed:
                failed.pop(path, None)
            leaves[path] = Leaf(path, -1, -1, "")
        return Snapshot(leaves, failed)

    def after_run(self, issues: Iterable[FileIssue]) -> Snapshot:
        """The snapshot to save: files that failed leave the leaves; those failing by content are remembered."""
        issues = list(issues)
        kept = self.without(issue.rel_path for issue in issues)
        for issue in issues:
            leaf = self.leaves.get(issue.rel_path)
            if leaf is not None and not issue.retry:
                kept.failed[issue.rel_path] = Failure(leaf, issue.reason)
        return kept


@dataclass(slots=True)
class Diff:
    added: list[str]
    modified: list[str]
    deleted: list[str]
    unchanged: list[str]
    still_failing: list[FileIssue] = field(default_factory=list)  # unchanged files that failed by content

    @property
    def to_index(self) -> list[str]:
        return sorted(self.added + self.modified)

    @property
    def to_remove(self) -> list[str]:
        """Files whose chunks may be in the stores and must go before (re)indexing."""
        return sorted(self.added + self.modified + self.deleted)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.added or self.modified or self.deleted)

    def carried_failures(self, previous: Snapshot | None) -> dict[str, Failure]:
        if previous is None:
            return {}
        return {issue.rel_path: previous.failed[issue.rel_path] for issue in self.still_failing}


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def build_snapshot(
    files: Sequence[SourceFile], previous: Snapshot | None, workers: int = 1
) -> tuple[Snapshot, list[FileIssue]]:
    """Leaves for the current files. Files with the previous size and mtime are not re-read;
    the others are hashed on `workers` threads (hashlib releases the GIL while it hashes)."""
    known: dict[str, Leaf] = {}
    if previous is not None:
        known = {**{p: f.leaf for p, f in previous.failed.items()}, **previous.leaves}
    leaves: dict[str, Leaf] = {}
    to_hash: list[SourceFile] = []
    for source in files:
        old = known.get(source.rel_path)
        if old is not None and old.size == source.size and old.mtime_ns == source.mtime_ns:
            leaves[source.rel_path] = old
        else:
            to_hash.append(source)
    issues: list[FileIssue] = []

    checkpoints.reached("hash")

    def one(source: SourceFile) -> tuple[SourceFile, str | None, str | None]:
        stopping.check()
        try:
            return source, hash_file(source.abs_path), None
        except OSError as error:
            return source, None, f"unreadable: {error.strerror or error}"

    if workers > 1 and len(to_hash) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rci-hash") as pool:
            results = list(pool.map(one, to_hash))
    else:
        results = [one(source) for source in to_hash]
    for source, digest, problem in results:
        if digest is None:
            issues.append(FileIssue(source.rel_path, problem))
        else:
            leaves[source.rel_path] = Leaf(source.rel_path, source.size, source.mtime_ns, digest)
    return Snapshot(dict(sorted(leaves.items()))), issues


def diff(previous: Snapshot | None, current: Snapshot) -> Diff:
    """Compare the previous snapshot with the current files (all of them in `current.leaves`)."""
    if previous is None:
        return Diff(sorted(current.leaves), [], [], [])
    if previous.root_hash == current.root_hash:
        still = [FileIssue(p, f.reason, retry=False) for p, f in sorted(previous.failed.items())]
        return Diff([], [], [], sorted(previous.leaves), still)
    added, modified, unchanged, still_failing = [], [], [], []
    for path, leaf in current.leaves.items():
        before = previous.leaves.get(path)
        failure = previous.failed.get(path)
        if failure is not None and failure.leaf.sha256 == leaf.sha256:
            still_failing.append(FileIssue(path, failure.reason, retry=False))
        elif before is None:
            added.append(path)
        elif before.sha256 != leaf.sha256:
            modified.append(path)
        else:
            unchanged.append(path)
    deleted = [path for path in previous.leaves if path not in current.leaves]
    return Diff(sorted(added), sorted(modified), sorted(deleted), sorted(unchanged), still_failing)


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
    leaves = {leaf["rel_path"]: Leaf(**leaf) for leaf in data.get("leaves", [])}
    failed = {f["leaf"]["rel_path"]: Failure(Leaf(**f["leaf"]), f["reason"]) for f in data.get("failed", [])}
    return Snapshot(leaves, failed)


def save_snapshot(path: Path, snapshot: Snapshot) -> None:
    payload = {
        "version": SNAPSHOT_VERSION,
        "root_hash": snapshot.root_hash,
        "leaves": [asdict(leaf) for _, leaf in sorted(snapshot.leaves.items())],
        "failed": [asdict(failure) for _, failure in sorted(snapshot.failed.items())],
    }
    write_atomic(Path(path), json.dumps(payload, separators=(",", ":")))


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write to a temporary file beside `path`, flush it to disk (unless not `durable`: a
    progress record), then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

