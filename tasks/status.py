"""What is in a code base's index, whether its two stores agree, and a run in progress."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tasks.commit import damaged, load_manifest, load_unfinished, repair_advice
from tasks.lock import run_in_progress
from tasks.merkle import load_snapshot
from tasks.progress import read_run_file
from tasks.settings import CodebaseLayout, Settings
from tasks.tantivy_store import TantivyStore
from tasks.vector_store import VectorsUnavailable, open_for_reading


class IndexStatus(BaseModel):
    directory: str
    codebase_id: str
    data_dir: str
    indexed: bool
    files: int = 0
    chunks_tantivy: int = 0
    chunks_qdrant: int | None = None  # chunks with a vector (tasks.chunk.has_vector); None: not counted
    stores_agree: bool | None = None  # None: not checked
    disagreement: str = ""
    model: str = ""
    model_source: str = ""
    qdrant: str = ""
    updated_at: str = ""
    last_run: dict = {}
    running: str = ""  # who is indexing the code base now, if anyone
    progress: dict = {}  # that run's progress (run.json)
    note: str = ""
    damaged: str = ""  # a state file that cannot be read, and what to run


def index_status(root: Path, settings: Settings) -> IndexStatus:
    layout = CodebaseLayout.for_root(root, settings)
    status = IndexStatus(
        directory=str(layout.root), codebase_id=layout.codebase_id, data_dir=str(layout.data_dir), indexed=False
    )
    running = run_in_progress(layout.lock_path)
    if running:
        status.running = running
        status.progress = read_run_file(layout.run_path) or {}
    for path in (layout.manifest_path, layout.snapshot_path):
        if reason := damaged(path):
            return status.model_copy(update={"damaged": repair_advice(layout, path, reason)})
    manifest = load_manifest(layout.manifest_path)
    if manifest is None:
        return status
    snapshot = load_snapshot(layout.snapshot_path)
    tantivy = TantivyStore.open_existing(layout.tantivy_dir)
    chunks_tantivy, vectored_ids = tantivy.count(), tantivy.ids(with_vectors=True)
    status = status.model_copy(
        update={
            "indexed": True,
            "files": len(snapshot.leaves) if snapshot else 0,
            "chunks_tantivy": chunks_tantivy,
            "model": manifest.model_name,
            "model_source": manifest.model_source,
            "qdrant": manifest.qdrant,
            "updated_at": manifest.updated_at,
            "last_run": manifest.last_run,
        }
    )
    if running:  # the stores are changing: the counts are the last commit's, agreement unknown
        return status.model_copy(update={"note": "a run is in progress; the counts are those of the last commit"})
    try:
        vectors = open_for_reading(layout, settings)
    except VectorsUnavailable as busy:
        return status.model_copy(update={"note": str(busy)})
    try:
        qdrant_ids = vectors.ids()
    finally:
        vectors.close()
    only_tantivy, only_qdrant = len(vectored_ids - qdrant_ids), len(qdrant_ids - vectored_ids)
    agree = not only_tantivy and not only_qdrant
    return status.model_copy(
        update={
            "chunks_qdrant": len(qdrant_ids),
            "stores_agree": agree,
            "disagreement": "" if agree else (
                f"{only_tantivy} chunks only in Tantivy, {only_qdrant} only in Qdrant; " + _repair(layout)
            ),
        }
    )


def _repair(layout: CodebaseLayout) -> str:
    unfinished = load_unfinished(layout)
    if unfinished.start_over or unfinished.files:
        return f"the last run stopped before it finished: the next `rci index {layout.root}` repairs both"
    return f"`rci index {layout.root} --force` rebuilds both"
