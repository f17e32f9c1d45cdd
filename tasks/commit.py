"""Commit: Tantivy commit, Qdrant writes acknowledged, then the manifest, then the snapshot.

The order is the point. The snapshot says "these files are in both stores", so it is saved
last: if anything before it fails, the next run diffs against the previous snapshot and
redoes the same files (deletes by file, deterministic ids: redoing is harmless).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tasks.chunk import CHUNKER_VERSION
from tasks.embed import ModelSpec
from tasks.merkle import Snapshot, save_snapshot, write_atomic
from tasks.qdrant_store import QdrantStore
from tasks.settings import CodebaseLayout
from tasks.tantivy_store import SCHEMA_VERSION, TantivyStore


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


def commit_index(
    tantivy: TantivyStore,
    qdrant: QdrantStore,
    layout: CodebaseLayout,
    manifest: Manifest,
    snapshot: Snapshot,
) -> None:
    tantivy.commit()
    # Qdrant upserts and deletes were sent with wait=True: each returned only once applied.
    # Reading the count back proves the collection answers before the snapshot says so.
    qdrant.count()
    save_manifest(layout.manifest_path, manifest)
    save_snapshot(layout.snapshot_path, snapshot)
