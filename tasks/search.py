"""Search a code base's index: BM25 (Tantivy), vectors (Qdrant), or both fused by reciprocal rank fusion.

RRF scores an item by sum(1 / (k + rank)) over the engines that returned it, rank starting
at 1: robust to the engines' incomparable score scales. Fusion works on items: in each
engine's list an item counts once, at its best window's rank, and comes back as one result
with its full line range. Containers and test code are scaled down (KIND_PRIOR, TEST_PRIOR).
Results carry `stale` when their file changed on disk since the index was built.

`Searcher` opens the stores and the model once for many queries (the CLI, servers, the
evaluation); `search()` is the one-shot form.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tasks.commit import Manifest, incompatibility, load_manifest
from tasks.embed import Embedder
from tasks.merkle import load_snapshot
from tasks.qdrant_store import QdrantStore
from tasks.settings import CodebaseLayout, Settings, load_settings
from tasks.tantivy_store import TantivyStore

ENGINES = ("hybrid", "bm25", "vector")
SNIPPET_LINES = 6


class SearchError(ValueError):
    """A search that cannot run; the message says what to do."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    file: str
    start_line: int
    end_line: int
    symbol: str
    kind: str
    score: float
    snippet: str
    stale: bool = False

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Hit:
    """One chunk from either engine, in the fields search needs."""

    id: str
    item_id: str
    path: str
    symbol: str
    kind: str
    item_start_line: int
    item_end_line: int
    code: str


# Containers rank below their members: an impl's or a module's chunk is its header and loose
# items, and a query that matches it usually wants one of the methods or items inside.
# Measured on clap + regex (search_quality.py --tune, k=30, 100 candidates): hybrid MRR@10
# 0.599 -> 0.617, Recall@10 0.872 -> 0.883.
KIND_PRIOR = {"impl": 0.5, "module": 0.5}
# Test code (tests/, benches/, examples/ folders, `mod test`/`mod tests`) ranks below the code it
# tests: a description of behaviour names the API more often than its test.
TEST_PRIOR = 0.5
_TEST_FOLDERS = ("tests/", "benches/", "examples/")


def is_test_code(rel_path: str, symbol: str) -> bool:
    return rel_path.startswith(_TEST_FOLDERS) or "/tests/" in rel_path or any(
        part in ("test", "tests") for part in symbol.split("::")[1:-1]
    )


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(dict.fromkeys(ranking), start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores


def snippet_of(code: str, lines: int = SNIPPET_LINES) -> str:
    return "\n".join([line for line in code.splitlines() if line.strip()][:lines])


def matching_paths(paths: Iterable[str], pattern: str) -> list[str]:
    """Paths matching a glob (`src/**/*.rs`, `*/tests/*`); a pattern without wildcards is a folder or file."""
    pattern = pattern.strip().lstrip("./")
    if not any(ch in pattern for ch in "*?["):
        prefix = pattern.rstrip("/")
        return [p for p in paths if p == prefix or p.startswith(prefix + "/")]
    return [p for p in paths if fnmatch.fnmatchcase(p, pattern)]


class Searcher:
    """Both stores and the query model of one code base, opened once for many queries.

    keep_shards_open: the embedded store's shards stay in memory once a query has loaded them
    (fast repeated queries); off, one shard at a time (one query: memory of one shard)."""

    def __init__(
        self,
        root: Path,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        keep_shards_open: bool = True,
    ):
        self.settings = settings or load_settings()
        self.layout = CodebaseLayout.for_root(Path(root), self.settings)
        manifest = load_manifest(self.layout.manifest_path)
        if manifest is None:
            raise SearchError(f"{self.layout.root} has no index yet; run `rci index {self.layout.root}` first")
        if embedder is None:
            from tasks.session import load_embedder

            embedder = load_embedder(self.settings)
        # The same check an index run makes: another model, schema, chunker or Qdrant than the
        # index was built with would search the wrong vectors or fields.
        reason = incompatibility(manifest, Manifest.for_run(self.layout, embedder.spec, embedder.dim, self.settings.qdrant_url))
        if reason:
            raise SearchError(f"{reason}; rebuild it with `rci index {self.layout.root} --force`")
        self.embedder = embedder
        self.kind_prior = dict(KIND_PRIOR)
        self.test_prior = TEST_PRIOR
        self.tantivy = TantivyStore.open_existing(self.layout.tantivy_dir)
        api_key = self.settings.qdrant_api_key.get_secret_value() if self.settings.qdrant_api_key else None
        self.qdrant = QdrantStore.open(
            self.layout.qdrant_dir,
            self.layout.collection,
            self.settings.qdrant_url,
            api_key,
            keep_shards_open=keep_shards_open,
        )
        snapshot = load_snapshot(self.layout.snapshot_path)
        self.files = {p: (leaf.size, leaf.mtime_ns) for p, leaf in (snapshot.leaves.items() if snapshot else [])}

    def search(
        self,
        query: str,
        limit: int = 10,
        engine: str = "hybrid",
        kinds: Sequence[str] | None = None,
        path: str | None = None,
        rrf_k: int | None = None,
        bm25_candidates: int | None = None,
        vector_candidates: int | None = None,
    ) -> list[SearchResult]:
        """Up to `limit` items for `query`; fusion parameters default to the settings (RCI_SEARCH_*)."""
        rrf_k = rrf_k or self.settings.search_rrf_k
        bm25_candidates = bm25_candidates or self.settings.search_bm25_candidates
        vector_candidates = vector_candidates or self.settings.search_vector_candidates
        if not query.strip():
            raise SearchError('the query is empty; say what you are looking for, e.g. `rci search . "parse arguments"`')
        if engine not in ENGINES:
            raise SearchError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
        kinds = [k.strip() for k in kinds or [] if k.strip()]
        paths = None
        if path:
            paths = matching_paths(self.files, path)
            if not paths:
                return []
        rankings: list[list[_Hit]] = []
        if engine in ("hybrid", "bm25"):
            rankings.append([_from_tantivy(h) for h in self.tantivy.search(query, bm25_candidates, kinds, paths)])
        if engine in ("hybrid", "vector"):
            vector = self.embedder.embed_query(query)
            rankings.append([_from_payload(h.id, h.payload) for h in self.qdrant.search(vector, vector_candidates, kinds, paths)])
        return self._merge(rankings, rrf_k, limit)

    def _merge(self, rankings: list[list[_Hit]], rrf_k: int, limit: int) -> list[SearchResult]:
        """Fuse at the item level: each engine's ranking keeps an item once, at its best window's
        rank (so one long item's windows do not push others down), then reciprocal rank fusion;
        the result shows the item's best window's snippet."""
        items = [list(_best_window_per_item(ranking).values()) for ranking in rankings]
        fused = reciprocal_rank_fusion([[hit.item_id for hit in ranking] for ranking in items], rrf_k)
        shown: dict[str, _Hit] = {}
        for ranking in items:
            for hit in ranking:
                shown.setdefault(hit.item_id, hit)
        for item_id, hit in shown.items():
            fused[item_id] *= self.kind_prior.get(hit.kind, 1.0)
            if is_test_code(hit.path, hit.symbol):
                fused[item_id] *= self.test_prior
        ordered = sorted(shown.values(), key=lambda hit: (-fused[hit.item_id], hit.path, hit.item_start_line))[:limit]
        stale = self._stale({hit.path for hit in ordered})
        return [
            SearchResult(hit.path, hit.item_start_line, hit.item_end_line, hit.symbol, hit.kind,
                         round(fused[hit.item_id], 6), snippet_of(hit.code), hit.path in stale)  # fmt: skip
            for hit in ordered
        ]

    def _stale(self, paths: Iterable[str]) -> set[str]:
        """Files whose size or mtime differ from the snapshot's (or that are gone): reindex to refresh."""
        stale = set()
        for path in paths:
            try:
                info = os.stat(self.layout.root / path)
                current = (info.st_size, info.st_mtime_ns)
            except OSError:
                current = None
            if current != self.files.get(path):
                stale.add(path)
        return stale

    def close(self) -> None:
        self.qdrant.close()


def _best_window_per_item(ranking: list[_Hit]) -> dict[str, _Hit]:
    best: dict[str, _Hit] = {}
    for hit in ranking:
        best.setdefault(hit.item_id, hit)
    return best


def _from_tantivy(hit) -> _Hit:
    return _Hit(hit.id, hit.item_id, hit.path, hit.symbol, hit.kind, hit.item_start_line, hit.item_end_line, hit.code)


def _from_payload(point_id: str, p: dict) -> _Hit:
    return _Hit(point_id, p["item_id"], p["path"], p["symbol"], p["kind"], p["item_start_line"], p["item_end_line"], p["text"])


def search(root: Path, query: str, settings: Settings | None = None, **options) -> list[SearchResult]:
    """One query, opening and closing everything (the CLI's path)."""
    searcher = Searcher(root, settings, keep_shards_open=False)
    try:
        return searcher.search(query, **options)
    finally:
        searcher.close()
