"""Bulk mode: no HNSW graph is built while a whole code base is loaded into empty stores.

Enter records, beside the index, what the store needs to end bulk mode (a server: its
collection's own HNSW `m` and `indexing_threshold`, read before they are set to 0; Edge:
nothing, it builds no graph until asked), then pauses graph building. Exit builds the graph
(Edge: `optimize()`, once) or restores what was read (a server), then removes the record.
The flow exits in a `finally`; if the process dies in between, the next run finds the record
and exits bulk mode first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.merkle import write_atomic
from tasks.vector_store import VectorStore


@dataclass(frozen=True, slots=True)
class BulkState:
    location: str  # "embedded" or the server's URL
    paused: dict = field(default_factory=dict)  # what resume_indexing restores

    @property
    def note(self) -> str:
        if self.location == "embedded":
            return "bulk mode: nothing merged or rebuilt during the load; each segment's HNSW graph built once"
        return f"bulk mode: HNSW building paused during the load (m {self.paused.get('hnsw_m')} -> 0), then restored"


def enter_bulk_mode(store: VectorStore, state_path: Path) -> BulkState:
    leftover = load_bulk_state(state_path)
    if leftover is not None:  # a run died in bulk mode: its record holds the true originals
        return leftover

    def record(paused: dict) -> None:
        write_atomic(Path(state_path), json.dumps(asdict(BulkState(store.location, paused))))

    return BulkState(store.location, store.pause_indexing(record))


def exit_bulk_mode(store: VectorStore, state: BulkState, state_path: Path) -> None:
    """Build the graph / restore the settings, then drop the record. Safe to call twice (retries)."""
    store.resume_indexing(state.paused)
    Path(state_path).unlink(missing_ok=True)


def load_bulk_state(state_path: Path) -> BulkState | None:
    try:
        return BulkState(**json.loads(Path(state_path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def recover_bulk_mode(store: VectorStore, state_path: Path) -> bool:
    """A previous run died in bulk mode: end it now. True if it did."""
    state = load_bulk_state(state_path)
    if state is None or state.location != store.location:
        Path(state_path).unlink(missing_ok=True)
        return False
    exit_bulk_mode(store, state, state_path)
    return True
