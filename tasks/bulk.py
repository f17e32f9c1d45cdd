"""Bulk mode: no HNSW graph building while a whole code base is loaded into Qdrant.

Enter reads the collection's own HNSW `m` and optimizer `indexing_threshold`, records them
beside the index, then sets both to 0. Exit restores exactly what was read (never
hard-coded values) and removes the record. If a run dies in between, the next run finds
the record and restores it first. The embedded store ignores these settings (its
`update_collection` returns False), so there bulk mode says so and does nothing else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from qdrant_client import models

from tasks.merkle import write_atomic
from tasks.qdrant_store import QdrantStore

EMBEDDED_NOTE = "bulk mode skipped: the embedded Qdrant store has no HNSW graph to pause"


@dataclass(frozen=True, slots=True)
class BulkState:
    collection: str
    active: bool  # False on the embedded store
    hnsw_m: int | None = None
    indexing_threshold: int | None = None
    note: str = ""


def enter_bulk_mode(store: QdrantStore, state_path: Path) -> BulkState:
    if store.embedded:
        return BulkState(store.collection, active=False, note=EMBEDDED_NOTE)
    config = store.client.get_collection(store.collection).config
    state = BulkState(
        store.collection,
        active=True,
        hnsw_m=config.hnsw_config.m,
        indexing_threshold=config.optimizer_config.indexing_threshold,
        note=f"bulk mode: HNSW building paused (m {config.hnsw_config.m} -> 0) during the load",
    )
    if not Path(state_path).exists():  # a leftover record holds the true originals: keep it
        write_atomic(Path(state_path), json.dumps(asdict(state)))
    else:
        state = load_bulk_state(state_path) or state
    store.client.update_collection(
        store.collection,
        hnsw_config=models.HnswConfigDiff(m=0),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0),
    )
    return state


def exit_bulk_mode(store: QdrantStore, state: BulkState, state_path: Path) -> None:
    """Restore what enter read. Safe to call twice (retries)."""
    if not state.active:
        return
    store.client.update_collection(
        store.collection,
        hnsw_config=models.HnswConfigDiff(m=state.hnsw_m),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=state.indexing_threshold),
    )
    Path(state_path).unlink(missing_ok=True)


def load_bulk_state(state_path: Path) -> BulkState | None:
    try:
        return BulkState(**json.loads(Path(state_path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def recover_bulk_mode(store: QdrantStore, state_path: Path) -> bool:
    """A previous run died in bulk mode: restore the collection's settings now. True if it did."""
    state = load_bulk_state(state_path)
    if state is None or not state.active or not store.exists():
        Path(state_path).unlink(missing_ok=True)
        return False
    exit_bulk_mode(store, state, state_path)
    return True
