"""Hybrid search: BM25 (Tantivy) and vectors (Qdrant) fused by reciprocal rank fusion.

RRF scores a chunk by sum(1 / (k + rank)) over the engines that returned it, with rank
starting at 1: robust to the engines' incomparable score scales. k = 60 is the value
from the RRF paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.commit import load_manifest
from tasks.embed import Embedder
from tasks.qdrant_store import QdrantStore
from tasks.settings import CodebaseLayout, Settings, load_settings
from tasks.tantivy_store import TantivyStore

RRF_K = 60
CANDIDATES = 50  # per engine, before fusion
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

    def to_json(self) -> dict:
        return asdict(self)


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(dict.fromkeys(ranking), start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return scores


def snippet_of(code: str, lines: int = SNIPPET_LINES) -> str:
    kept = [line for line in code.splitlines() if line.strip()][:lines]
    return "\n".join(kept)


class Searcher:
    """Both stores and the query model of one code base, opened once for many queries."""

    def __init__(self, root: Path, settings: Settings | None = None, embedder: Embedder | None = None):
        self.settings = settings or load_settings()
        self.layout = CodebaseLayout.for_root(Path(root), self.settings)
        manifest = load_manifest(self.layout.manifest_path)
        if manifest is None:
            raise SearchError(f"{self.layout.root} has no index yet; run `rci index {self.layout.root}` first")
        if embedder is None:
            from tasks.session import load_embedder

            embedder = load_embedder(self.settings)
        if embedder.spec.model_id != manifest.model_id:
            raise SearchError(
                f"the index was built with {manifest.model_name} ({manifest.model_source}) but "
                f"{embedder.spec.name} ({embedder.spec.source}) is configured; "
                f"rebuild with `rci index {self.layout.root} --force`"
            )
        self.embedder = embedder
        self.tantivy = TantivyStore.open_existing(self.layout.tantivy_dir)
        api_key = self.settings.qdrant_api_key.get_secret_value() if self.settings.qdrant_api_key else None
        self.qdrant = QdrantStore.open(self.layout.qdrant_dir, self.layout.collection, self.settings.qdrant_url, api_key)

    def search(self, query: str, limit: int = 10, rrf_k: int = RRF_K, candidates: int = CANDIDATES) -> list[SearchResult]:
        if not query.strip():
            raise SearchError("the query is empty; say what you are looking for, e.g. `rci search . \"parse arguments\"`")
        bm25 = self.tantivy.search(query, limit=candidates)
        vectors = self.qdrant.search(self.embedder.embed_query(query), limit=candidates)
        fused = reciprocal_rank_fusion([[hit.id for hit in bm25], [hit.id for hit in vectors]], rrf_k)
        found: dict[str, SearchResult] = {}
        for hit in bm25:
            found[hit.id] = SearchResult(
                hit.path, hit.start_line, hit.end_line, hit.symbol, hit.kind, fused[hit.id], snippet_of(hit.code)
            )
        for hit in vectors:
            if hit.id not in found:
                p = hit.payload
                found[hit.id] = SearchResult(
                    p["path"], p["start_line"], p["end_line"], p["symbol"], p["kind"], fused[hit.id], snippet_of(p["text"])
                )
        return sorted(found.values(), key=lambda r: (-r.score, r.file, r.start_line))[:limit]

    def close(self) -> None:
        self.qdrant.close()
