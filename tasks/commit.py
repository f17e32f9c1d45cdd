"""Commit: Tantivy committed, the vector store flushed, then the manifest, then the snapshot.

The order is the point. The snapshot says "these files are in both stores", so it is saved
last: if anything before it fails, the next run diffs against the previous snapshot and
redoes the same files (deletes by file, deterministic ids: redoing is harmless).

A run that dies can leave the stores apart: the vector store's write-ahead log keeps writes
that Tantivy, uncommitted, drops. So before a run changes the stores it records which files
it changes (`unfinished.json`), and the next run redoes those too, even a file that has been
put back as it was since (tasks/merkle.py, Snapshot.doubting); a run that starts over records
that, and the next one starts over too. The commit removes the record. The last commit's
manifest and snapshot stay meanwhile, so searches keep answering from the last committed
Tantivy index while a run rebuilds it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tasks.chunk import CHUNKER_VERSION
from tasks.embed import ModelSpec
from tasks import checkpoints
from tasks.merkle import Snapshot, save_snapshot, write_atomic
from tasks.settings import CodebaseLayout
from tasks.tantivy_store import SCHEMA_VERSION, TantivyStore
from tasks.vector_store import VectorStore


@dataclass(slots=True)
class Manifest:
    root: str
    codebase_id: str
    schema_version: int
    chunker_version: int
    model_name: str
    model_id: str
    model_dim: int
    model_source: str
    qdrant: str  # "embedded" or the server URL
    updated_at: str = ""
    last_run: dict = field(default_factory=dict)

    @classmethod
    def for_run(cls, layout: CodebaseLayout, spec: ModelSpec, dim: int, qdrant_url: str | None) -> Manifest:
        return cls(
            root=str(layout.root),
            codebase_id=layout.codebase_id,
            schema_version=SCHEMA_VERSION,
            chunker_version=CHUNKER_VERSION,
            model_name=spec.name,
            model_id=spec.model_id,
            model_dim=dim,
            model_source=spec.source,
            qdrant=qdrant_url or "embedded",
        )


def load_manifest(path: Path) -> Manifest | None:
    try:
        return Manifest(**json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def save_manifest(path: Path, manifest: Manifest) -> None:
    manifest.updated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_atomic(Path(path), json.dumps(asdict(manifest), indent=2))


def incompatibility(existing: Manifest, wanted: Manifest) -> str | None:
    """Why the existing index cannot be updated in place, or None. Vectors never mix silently."""
    if existing.model_id != wanted.model_id or existing.model_dim != wanted.model_dim:
        return (
            f"the index was built with model {existing.model_name} ({existing.model_dim} dims, {existing.model_source}) "
            f"but the configured model is {wanted.model_name} ({wanted.model_dim} dims, {wanted.model_source})"
        )
    if existing.schema_version != wanted.schema_version or existing.chunker_version != wanted.chunker_version:
        return (
            f"the index was built by an older version (schema {existing.schema_version}, chunker "
            f"{existing.chunker_version}; now {wanted.schema_version}, {wanted.chunker_version})"
        )
    if existing.qdrant != wanted.qdrant:
        return f"the index's vectors are in Qdrant {existing.qdrant}, but Qdrant {wanted.qdrant} is configured"
    return None


@dataclass(frozen=True, slots=True)
class Unfinished:
    """What a run that did not reach its commit was changing."""

    start_over: bool = False  # it was rebuilding everything
    files: tuple[str, ...] = ()


def save_unfinished(layout: CodebaseLayout, rel_paths: list[str] = (), start_over: bool = False) -> None:
    """Before the stores change: these files (or everything) may be half-written if the run dies."""
    if not rel_paths and not start_over:
        return
    earlier = load_unfinished(layout)
    record = {"start_over": start_over or earlier.start_over, "files": sorted(set(rel_paths) | set(earlier.files))}
    write_atomic(layout.unfinished_path, json.dumps(record))


def load_unfinished(layout: CodebaseLayout) -> Unfinished:
    try:
        data = json.loads(layout.unfinished_path.read_text(encoding="utf-8"))
        return Unfinished(bool(data.get("start_over")), tuple(data.get("files", ())))
    except FileNotFoundError:
        return Unfinished()
    except (OSError, ValueError, TypeError, AttributeError):
        return Unfinished(start_over=True)  # unreadable: trust nothing


def damaged(path: Path) -> str | None:
    """Why a state file that is there cannot be read (empty, cut short, not JSON); None when it
    is missing or reads. The loaders treat both as absent: this says which it was."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        return f"unreadable: {getattr(error, 'strerror', None) or error}"
    if not text.strip():
        return "empty"
    try:
        data = json.loads(text)
    except ValueError as error:
        return f"not valid JSON, line {getattr(error, 'lineno', '?')}: {getattr(error, 'msg', error)}"
    return None if isinstance(data, dict) else "not a JSON object"


def repair_advice(layout: CodebaseLayout, path: Path, reason: str) -> str:
    return (
        f"the index's {Path(path).name} is damaged ({reason}); run `rci index {layout.root}` to rebuild the "
        "index from the embedding cache (nothing is embedded again)"
    )


def rebuild_advice(layout: CodebaseLayout) -> str:
    return (
        f"rebuild it with `rci index {layout.root} --force` (vectors of text the model has read before "
        "come from the embedding cache)"
    )


def commit_index(
    tantivy: TantivyStore,
    vectors: VectorStore,
    layout: CodebaseLayout,
    manifest: Manifest,
    snapshot: Snapshot,
) -> None:
    tantivy.commit()
    checkpoints.reached("commit:tantivy")
    vectors.commit()
    checkpoints.reached("commit:vectors")
    save_manifest(layout.manifest_path, manifest)
    checkpoints.reached("commit:manifest")
    save_snapshot(layout.snapshot_path, snapshot)
    layout.unfinished_path.unlink(missing_ok=True)
