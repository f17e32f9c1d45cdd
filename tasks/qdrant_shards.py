"""The embedded Qdrant store, split into shards so that memory does not grow with the code base.

qdrant-client's local mode loads every point of a store into Python objects when it opens it
(the medium corpus's 31k points: 8.1 s and 770 MB; the large corpus's 213k: 5.9 GB), and keeps
every point it writes in memory. So the embedded store is a folder of small local stores:

    <qdrant_dir>/<collection>/shards.json     which shard holds each file; points per shard
    <qdrant_dir>/<collection>/0000/ 0001/ ...  one qdrant-client local store each

A file's chunks live in one shard, so deleting a file opens one shard. New and changed files
go to the last shard until it holds `shard_points` points, then to a new one: a full index
writes shard after shard, and an update opens the shards it deletes from plus the last one.
Searching asks every shard for its nearest points and keeps the best: the same answer as one
store, because the embedded store searches exhaustively. An index run or a one-off search
holds one shard in memory at a time; a long-lived Searcher keeps those it opened.

The map is saved before points are written (a file is never in a shard the map does not
name), so a run that dies midway leaves deletes that find everything the next run redoes.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from tasks.merkle import write_atomic
from tasks.qdrant_store import EMBEDDED_POINTS_ADVISED, QdrantStore, VectorHit, _store_in_use, connect
from tasks.records import Chunk
from tasks.resources import return_freed_memory

MAP_NAME = "shards.json"


@dataclass(slots=True)
class ShardMap:
    dim: int
    points: list[int] = field(default_factory=list)  # by shard number, as of the shard's last use
    files: dict[str, int] = field(default_factory=dict)  # rel_path -> shard number

    @classmethod
    def load(cls, path: Path) -> ShardMap | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise RuntimeError(f"{path} is unreadable ({error}); rebuild the index with --force") from None

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), separators=(",", ":")))


class ShardedStore(QdrantStore):
    def __init__(
        self, qdrant_dir: Path, collection: str, shard_points: int, keep_open: bool = False, upsert_batch: int = 256
    ):
        super().__init__(None, collection, embedded=True, upsert_batch=upsert_batch)
        self.folder = Path(qdrant_dir) / collection
        self.shard_points = shard_points
        self.keep_open = keep_open
        self._open: OrderedDict[int, QdrantClient] = OrderedDict()
        # One process at a time, as qdrant-client's own lock on a single store: the same file.
        qdrant_dir = Path(qdrant_dir)
        qdrant_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(qdrant_dir / ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise _store_in_use(qdrant_dir) from None
        try:
            self.map = ShardMap.load(self.folder / MAP_NAME)
        except BaseException:
            self._lock.close()
            raise

    # --- shards ---------------------------------------------------------------------------------

    def shard_numbers(self) -> list[int]:
        """The shards that exist on disk (not the map's counts: those can lag after a crash)."""
        if self.map is None:
            return []
        return [n for n in range(len(self.map.points)) if (self.folder / f"{n:04d}").is_dir()]

    def shards_in_memory(self) -> int:
        return len(self._open)

    def _shard(self, number: int) -> QdrantClient:
        """The shard's client, opened (loading its points) if it is not open yet."""
        client = self._open.get(number)
        if client is not None:
            self._open.move_to_end(number)
            return client
        if not self.keep_open:
            self._close_shards()
        client = connect(self.folder / f"{number:04d}")
        if not client.collection_exists(self.collection):
            self._create_in(client, self.map.dim)
        self._open[number] = client
        self._recount(number)
        return client

    def _recount(self, number: int) -> None:
        self.map.points[number] = self._open[number].count(self.collection, exact=True).count

    def _close_shards(self) -> None:
        if not self._open:
            return
        while self._open:
            _, client = self._open.popitem(last=False)
            client.close()
        return_freed_memory()  # a shard's points are many small objects: give their pages back

    def _shard_for_new_file(self, pending: dict[int, int]) -> int:
        last = len(self.map.points) - 1
        if last < 0 or self.map.points[last] + pending.get(last, 0) >= self.shard_points:
            self.map.points.append(0)
            last += 1
        return last

    def _save_map(self) -> None:
        self.map.save(self.folder / MAP_NAME)

    # --- the store ------------------------------------------------------------------------------

    @property
    def client(self) -> QdrantClient:
        """The shard new files go to (what code that needs one client gets)."""
        return self._shard(self._shard_for_new_file({}))

    def exists(self) -> bool:
        return self.map is not None

    def ensure_collection(self, dim: int) -> None:
        if self.map is not None:
            if self.map.dim != dim:
                raise RuntimeError(
                    f"collection {self.collection} holds {self.map.dim}-dimension vectors but the model makes {dim}; "
                    "rebuild it with --force"
                )
            return
        self.map = ShardMap(dim)
        self._save_map()

    def vector_size(self) -> int:
        return self.map.dim

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        by_shard: dict[int, list[int]] = {}
        for position, chunk in enumerate(chunks):
            number = self.map.files.get(chunk.rel_path)
            if number is None:
                number = self._shard_for_new_file({n: len(p) for n, p in by_shard.items()})
                self.map.files[chunk.rel_path] = number
            by_shard.setdefault(number, []).append(position)
        self._save_map()  # before the points: the map always names every shard a file is in
        for number, positions in by_shard.items():
            first, end = positions[0], positions[-1] + 1
            if end - first == len(positions):  # new files fill shards in order: a view, not a copy
                part_chunks, part_vectors = chunks[first:end], vectors[first:end]
            else:
                part_chunks, part_vectors = [chunks[p] for p in positions], vectors[positions]
            self._upsert_into(self._shard(number), part_chunks, part_vectors)
            self._recount(number)
        self._save_map()
        return len(chunks)

    def delete_files(self, rel_paths: Iterable[str]) -> None:
        by_shard: dict[int, list[str]] = {}
        for path in rel_paths:
            if self.map is not None and path in self.map.files:
                by_shard.setdefault(self.map.files[path], []).append(path)
        for number, paths in sorted(by_shard.items()):
            self._delete_from(self._shard(number), paths)
            self._recount(number)
            for path in paths:
                del self.map.files[path]
            self._save_map()
            if self.map.points[number] == 0 and number != len(self.map.points) - 1:
                self._remove_shard(number)  # emptied: later runs and searches need not open it

    def _remove_shard(self, number: int) -> None:
        client = self._open.pop(number, None)
        if client is not None:
            client.close()
        shutil.rmtree(self.folder / f"{number:04d}", ignore_errors=True)

    def delete_collection(self) -> None:
        self._close_shards()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.map = None

    def count(self) -> int:
        return sum(self.map.points[n] for n in self.shard_numbers()) if self.map else 0

    def records(self, with_payload: bool = True, with_vectors: bool = False) -> list[models.Record]:
        found: list[models.Record] = []
        for number in self.shard_numbers():
            found += self._records_in(self._shard(number), with_payload, with_vectors)
        return found

    def points_of(self, rel_path: str, with_vectors: bool = False) -> list[models.Record]:
        number = self.map.files.get(rel_path) if self.map else None
        if number is None:
            return []
        records, _ = self._shard(number).scroll(
            self.collection,
            scroll_filter=models.Filter(
                must=[models.FieldCondition(key="path", match=models.MatchValue(value=rel_path))]
            ),
            limit=100_000,
            with_vectors=with_vectors,
        )
        return records

    def search(
        self, vector: np.ndarray, limit: int = 50, kinds: Iterable[str] | None = None, paths: Iterable[str] | None = None
    ) -> list[VectorHit]:
        """Each shard's nearest points, the best `limit` of them all (only shards holding `paths`)."""
        kinds = list(kinds or [])
        paths = list(paths) if paths is not None else None
        numbers = self.shard_numbers()
        if paths is not None and numbers:
            holding = {self.map.files[p] for p in paths if p in self.map.files}
            numbers = [n for n in numbers if n in holding]
        hits: list[VectorHit] = []
        for number in numbers:
            hits += self._search_in(self._shard(number), vector, limit, kinds, paths)
        return sorted(hits, key=lambda hit: (-hit.score, hit.id))[:limit]

    def size_note(self, points: int) -> str | None:
        if points <= EMBEDDED_POINTS_ADVISED:
            return None
        return (
            f"the embedded Qdrant store holds {points:,} points, past the {EMBEDDED_POINTS_ADVISED:,} it is meant for: "
            f"each search loads them all, {self.shard_points:,} at a time; a Qdrant server (RCI_QDRANT_URL) "
            "answers searches on a code base this size without loading anything"
        )

    def release_memory(self) -> None:
        """Close the open shards; the next read or write opens what it needs again."""
        self._close_shards()

    def close(self) -> None:
        try:
            self._close_shards()
        finally:
            self._lock.close()  # releases the flock
