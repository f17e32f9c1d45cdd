"""What is in a code base's index, and whether its two stores agree."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tasks.commit import load_manifest
from tasks.merkle import load_snapshot
from tasks.qdrant_store import QdrantStore
from tasks.settings import CodebaseLayout, Settings
from tasks.tantivy_store import TantivyStore


class IndexStatus(BaseModel):
    directory: str
    codebase_id: str
    data_dir: str
    indexed: bool
    files: int = 0
    chunks_tantivy: int = 0
    chunks_qdrant: int = 0
    stores_agree: bool = False
    disagreement: str = ""
    model: str = ""
    model_source: str = ""
    qdrant: str = ""
    updated_at: str = ""
    last_run: dict = {}
    note: str = ""  # advice, e.g. an embedded Qdrant store past the size it is meant for


def index_status(root: Path, settings: Settings) -> IndexStatus:
    layout = CodebaseLayout.for_root(root, settings)
    status = IndexStatus(
        directory=str(layout.root), codebase_id=layout.codebase_id, data_dir=str(layout.data_dir), indexed=False
    )
    manifest = load_manifest(layout.manifest_path)
    if manifest is None:
        return status
    snapshot = load_snapshot(layout.snapshot_path)
    tantivy_ids = TantivyStore.open_existing(layout.tantivy_dir).ids()
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    qdrant = QdrantStore.open(layout.qdrant_dir, layout.collection, settings.qdrant_url, api_key)
    try:
        qdrant_ids = qdrant.ids()
        note = qdrant.size_note(len(qdrant_ids)) or ""
    finally:
        qdrant.close()
    only_tantivy, only_qdrant = len(tantivy_ids - qdrant_ids), len(qdrant_ids - tantivy_ids)
    return status.model_copy(
        update={
            "indexed": True,
            "files": len(snapshot.leaves) if snapshot else 0,
            "chunks_tantivy": len(tantivy_ids),
            "chunks_qdrant": len(qdrant_ids),
            "stores_agree": not only_tantivy and not only_qdrant,
            "disagreement": (
                f"{only_tantivy} chunks only in Tantivy, {only_qdrant} only in Qdrant; `rci index --force` rebuilds both"
                if only_tantivy or only_qdrant
                else ""
            ),
            "model": manifest.model_name,
            "model_source": manifest.model_source,
            "qdrant": manifest.qdrant,
            "updated_at": manifest.updated_at,
            "last_run": manifest.last_run,
            "note": note,
        }
    )
