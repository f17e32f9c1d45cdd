"""Search a code base's index: BM25 (Tantivy), vectors (Qdrant), or both fused by reciprocal rank fusion.

RRF scores an item by sum(1 / (k + rank)) over the engines that returned it, rank starting
at 1: robust to the engines' incomparable score scales; k is lower for a query shaped like a
name (fusion_k). Fusion works on items: in each
engine's list an item counts once, at its best window's rank, and comes back as one result
with its full line range. Containers and test code are scaled down (KIND_PRIOR, TEST_PRIOR), test
code not when the query asks for tests or names the test.
Results carry `stale` when their file changed on disk since the index was built.

`Searcher` opens the stores and the model once for many queries (the CLI, servers, the
evaluation); `search()` is the one-shot form.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tasks.commit import Manifest, damaged, incompatibility, load_manifest, rebuild_advice, repair_advice
from tasks.embed import load_query_encoder
from tasks.merkle import load_snapshot
from tasks.settings import CodebaseLayout, Settings, load_settings
from tasks.tantivy_store import TantivyStore
from tasks.vector_store import VectorsUnavailable, open_for_reading, open_warm

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
# tests: a description of behaviour names the API more often than its test. Not when the query
# asks for tests (asks_for_tests). 0.6 is the most that leaves the evaluation's tune half as it
# was; at 0.5, queries for tests found them in the top 10 for 17-29% of 42 written for them, at
# 0.6 with the query rule 44-51% (tests/benchmarks/README.md, "Queries for tests").
TEST_PRIOR = 0.6
# `test`, `tests`, `testing`, `tested` as a word or a part of a snake_case name, not the verb of
# "test whether/if" (a description of checking something).
_TEST_WORD = re.compile(r"(?<![a-z0-9])test(?:s|ing|ed)?(?![a-z0-9])(?!\s+(?:whether|if)\b)", re.IGNORECASE)
# Each engine's weight in the fusion by the query's shape (query_shape); missing: 1.
SHAPE_WEIGHTS: dict[str, dict[str, float]] = {}
_TEST_FOLDERS = ("tests/", "benches/", "examples/")


def is_test_code(rel_path: str, symbol: str) -> bool:
    return rel_path.startswith(_TEST_FOLDERS) or "/tests/" in rel_path or any(
        part in ("test", "tests") for part in symbol.split("::")[1:-1]
    )


def asks_for_tests(query: str) -> bool:
    """`the test that checks a timeout fires`, `tests for retry`, `test_parse_span`: test code keeps its full rank."""
    return _TEST_WORD.search(query) is not None


def names_in(query: str) -> frozenset[str]:
    """The item names a query may be giving: every word of an identifier-shaped query, else the
    words written as identifiers (`snake_case`, `CamelCase`, `a::path`'s last part), lowercased."""
    words = re.findall(r"\w+(?:::\w+)*", query)
    if query_shape(query) != "identifier":
        words = [w for w in words if _IDENTIFIER_TOKEN.search(w)]
    return frozenset(_own_name(w) for w in words)


def _own_name(symbol: str) -> str:
    return symbol.rsplit("::", 1)[-1].lower()


def item_priors(
    items: dict[str, tuple[str, str, str]], query: str, kind_prior: dict[str, float] = KIND_PRIOR,
    test_prior: float = TEST_PRIOR,
) -> dict[str, float]:
    """Each candidate's factor on its fused score (item id -> (path, symbol, kind)): containers and
    test code lower. Test code keeps its rank when the query asks for tests, and a test the query
    names exactly keeps it unless code of that name is also a candidate (tests often share the
    API's names: `captures_iter`)."""
    test_prior = 1.0 if asks_for_tests(query) else test_prior
    named = names_in(query)
    tests = {item_id for item_id, (path, symbol, _) in items.items() if is_test_code(path, symbol)}
    code_names = {_own_name(symbol) for item_id, (_, symbol, _) in items.items() if item_id not in tests}
    factors = {}
    for item_id, (_, symbol, kind) in items.items():
        factors[item_id] = kind_prior.get(kind, 1.0)
        if item_id in tests and not (_own_name(symbol) in named and _own_name(symbol) not in code_names):
            factors[item_id] *= test_prior
    return factors


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, key in enumerate(dict.fromkeys(ranking), start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return scores


_IDENTIFIER_TOKEN = re.compile(r"[_:<>(\[]|[a-z][A-Z]|^[A-Z][a-z]+[A-Z]")


def query_shape(query: str) -> str:
    """The query's shape: "identifier" (`replace_all`, `captures iter`, `LitInt base10`),
    "sentence" (three or more plain words) or "mixed" (words and an identifier)."""
    words = query.split()
    marked = sum(1 for word in words if _IDENTIFIER_TOKEN.search(word))
    if len(words) <= 2 or marked == len(words):
        return "identifier"
    return "mixed" if marked else "sentence"


def fusion_k(query: str, engine: str, settings: Settings) -> int:
    """Reciprocal rank fusion's k for a query. Fusing both engines for an identifier-shaped query,
    a lower k lets the engine that ranks a name first keep it near the top (tests/benchmarks/README.md,
    "Fusion's k by query shape"); a single engine's k only sets how far the priors move items."""
    if engine == "hybrid" and query_shape(query) == "identifier":
        return settings.search_rrf_k_identifier
    return settings.search_rrf_k


def snippet_of(code: str, lines: int = SNIPPET_LINES) -> str:
    return "\n".join([line for line in code.splitlines() if line.strip()][:lines])


def matching_paths(paths: Iterable[str], pattern: str) -> list[str]:
    """Paths matching a glob (`src/**/*.rs`, `*/tests/*`); a pattern without wildcards is a folder or file."""
    pattern = pattern.strip().lstrip("./")
    if not any(ch in pattern for ch in "*?["):
        prefix = pattern.rstrip("/")
        return [p for p in paths if p == prefix or p.startswith(prefix + "/")]
    return [p for p in paths if fnmatch.fnmatchcase(p, pattern)]


class SearchResults(list):
    """The results, best first, and what the user should know about them (`notes`): vector
    results missing while an index run writes the store, say."""

    def __init__(self, results: Iterable[SearchResult] = (), notes: Sequence[str] = ()):
        super().__init__(results)
        self.notes = list(notes)


class Searcher:
    """Both stores and the query model of one code base, for many queries.

    `warm`: the vector store stays open between queries (a long-lived process: the MCP
    server, the evaluation) and is let go whenever an index run wants it; off, each query
    opens and closes it (a one-off `rci search`). Either way the searcher reads what the last
    committed run left: Tantivy and the snapshot are reloaded when they change."""

    def __init__(self, root: Path, settings: Settings | None = None, embedder=None, warm: bool = True):
        self.settings = settings or load_settings()
        self.layout = CodebaseLayout.for_root(Path(root), self.settings)
        self.warm = warm
        self._embedder = embedder
        self.kind_prior = dict(KIND_PRIOR)
        self.test_prior = TEST_PRIOR
        self.shape_weights = {shape: dict(w) for shape, w in SHAPE_WEIGHTS.items()}
        self._manifest_seen = None
        self.tantivy: TantivyStore | None = None
        self._warm_vectors = None
        self._refresh()
        self._loading: _Background | None = None

    def _start_loading_model(self) -> None:
        """The query model loads on a thread while the vector store opens."""
        if self._embedder is None and self._loading is None:
            self._loading = _Background(lambda: load_query_encoder(self.settings, one_off=not self.warm))

    @property
    def embedder(self):
        """The query model, loaded on first use."""
        if self._embedder is None:
            self._start_loading_model()
            self._embedder = self._loading.result()
            self._check(load_manifest(self.layout.manifest_path))
        return self._embedder

    def refresh(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        """(Re)read the manifest, snapshot and Tantivy index when a run has committed since."""
        try:
            seen = self.layout.manifest_path.stat().st_mtime_ns
        except FileNotFoundError:
            seen = None
        if seen is not None and seen == self._manifest_seen:
            return
        manifest = load_manifest(self.layout.manifest_path)
        if manifest is None:
            if reason := damaged(self.layout.manifest_path):
                raise SearchError(repair_advice(self.layout, self.layout.manifest_path, reason))
            raise SearchError(f"{self.layout.root} has no index yet; run `rci index {self.layout.root}` first")
        self._check(manifest)
        if reason := damaged(self.layout.snapshot_path):
            raise SearchError(repair_advice(self.layout, self.layout.snapshot_path, reason))
        self.tantivy = TantivyStore.open_existing(self.layout.tantivy_dir)
        snapshot = load_snapshot(self.layout.snapshot_path)
        self.files = {p: (leaf.size, leaf.mtime_ns) for p, leaf in (snapshot.leaves.items() if snapshot else [])}
        self._manifest_seen = seen

    def _check(self, manifest: Manifest) -> None:
        """The same check an index run makes: another model, schema, chunker or Qdrant than the
        index was built with would search the wrong vectors or fields."""
        from tasks.embed import resolve_model

        spec = self._embedder.spec if self._embedder is not None else resolve_model(self.settings)
        dim = self._embedder.dim if self._embedder is not None else manifest.model_dim
        reason = incompatibility(manifest, Manifest.for_run(self.layout, spec, dim, self.settings.qdrant_url))
        if reason:
            raise SearchError(f"{reason}; {rebuild_advice(self.layout)}")

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
    ) -> SearchResults:
        """Up to `limit` items for `query`; fusion parameters default to the settings (RCI_SEARCH_*)."""
        rrf_k = rrf_k or fusion_k(query, engine, self.settings)
        bm25_candidates = bm25_candidates or self.settings.search_bm25_candidates
        vector_candidates = vector_candidates or self.settings.search_vector_candidates
        if not query.strip():
            raise SearchError('the query is empty; say what you are looking for, e.g. `rci search . "parse arguments"`')
        if engine not in ENGINES:
            raise SearchError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
        self._refresh()
        kinds = [k.strip() for k in kinds or [] if k.strip()]
        paths = None
        if path:
            paths = matching_paths(self.files, path)
            if not paths:
                return SearchResults()
        notes: list[str] = []
        rankings: list[list[_Hit]] = []
        weights: list[float] = []
        shape_weights = self.shape_weights.get(query_shape(query), {})
        vector_hits = None
        if engine in ("hybrid", "vector"):
            try:
                vector_hits = self._vector_search(query, vector_candidates, kinds, paths)
            except VectorsUnavailable as unavailable:
                notes.append(str(unavailable))
        if engine in ("hybrid", "bm25") or vector_hits is None:
            rankings.append([_from_tantivy(h) for h in self.tantivy.search(query, bm25_candidates, kinds, paths)])
            weights.append(shape_weights.get("bm25", 1.0))
        if vector_hits:
            docs = self.tantivy.by_ids([hit.id for hit in vector_hits])
            rankings.append([_from_tantivy(docs[hit.id]) for hit in vector_hits if hit.id in docs])
            weights.append(shape_weights.get("vector", 1.0))
        return SearchResults(self._merge(rankings, rrf_k, limit, weights, query), notes)

    def _vector_search(self, query: str, limit: int, kinds: list[str], paths: list[str] | None) -> list:
        self._start_loading_model()  # it loads while the store opens
        return self._vectors_call(lambda store: store.search(self.embedder.embed_query(query), limit, kinds, paths))

    def _merge(
        self, rankings: list[list[_Hit]], rrf_k: int, limit: int, weights: list[float], query: str
    ) -> list[SearchResult]:
        """Fuse at the item level: each engine's ranking keeps an item once, at its best window's
        rank (so one long item's windows do not push others down), then reciprocal rank fusion
        scaled by item_priors; the result shows the item's best window's snippet."""
        items = [list(_best_window_per_item(ranking).values()) for ranking in rankings]
        fused = reciprocal_rank_fusion([[hit.item_id for hit in ranking] for ranking in items], rrf_k, weights)
        shown: dict[str, _Hit] = {}
        for ranking in items:
            for hit in ranking:
                shown.setdefault(hit.item_id, hit)
        described = {item_id: (hit.path, hit.symbol, hit.kind) for item_id, hit in shown.items()}
        for item_id, factor in item_priors(described, query, self.kind_prior, self.test_prior).items():
            fused[item_id] *= factor
        ordered = sorted(shown.values(), key=lambda hit: (-fused[hit.item_id], hit.path, hit.item_start_line))[:limit]
        stale = self._stale({hit.path for hit in ordered})
        return [
            SearchResult(hit.path, hit.item_start_line, hit.item_end_line, hit.symbol, hit.kind,
                         round(fused[hit.item_id], 6), snippet_of(hit.code), hit.path in stale)  # fmt: skip
            for hit in ordered
        ]

    def stale_files(self, paths: Iterable[str]) -> set[str]:
        return self._stale(paths)

    def vector_of(self, chunk_id: str):
        """The stored vector of one chunk."""
        return self._vectors_call(lambda store: store.vector_of(chunk_id))

    def nearest(self, vector, limit: int, kinds: Sequence[str] = (), paths: Sequence[str] | None = None) -> list:
        """The vector store's nearest chunks to a vector (hits: id and score)."""
        return self._vectors_call(lambda store: store.search(vector, limit, kinds, paths))

    def _vectors_call(self, call):
        if self.warm:
            if self._warm_vectors is None:
                self._warm_vectors = open_warm(self.layout, self.settings)
            return self._warm_vectors.call(call)
        store = open_for_reading(self.layout, self.settings)
        try:
            return call(store)
        finally:
            store.close()

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
        if self._loading is not None:  # a process must not exit while ONNX Runtime loads on a thread
            self._loading.wait()
        if self._warm_vectors is not None:
            self._warm_vectors.close()
            self._warm_vectors = None


class _Background:
    """A value computed on a thread of its own; result() waits for it (and raises what it raised)."""

    def __init__(self, make):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(make,), name="rci-load-model", daemon=True)
        self._thread.start()

    def _run(self, make) -> None:
        try:
            self._value = make()
        except BaseException as error:  # handed to the caller of result()
            self._error = error

    def wait(self) -> None:
        self._thread.join()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _best_window_per_item(ranking: list[_Hit]) -> dict[str, _Hit]:
    best: dict[str, _Hit] = {}
    for hit in ranking:
        best.setdefault(hit.item_id, hit)
    return best


def _from_tantivy(hit) -> _Hit:
    return _Hit(hit.id, hit.item_id, hit.path, hit.symbol, hit.kind, hit.item_start_line, hit.item_end_line, hit.code)


def search(root: Path, query: str, settings: Settings | None = None, **options) -> SearchResults:
    """One query, opening and closing everything (the CLI's path)."""
    searcher = Searcher(root, settings, warm=False)
    try:
        return searcher.search(query, **options)
    finally:
        searcher.close()
