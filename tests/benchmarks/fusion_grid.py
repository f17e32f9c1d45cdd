"""Fusion rules side by side on the search evaluation: reciprocal rank fusion (the default, k,
k by query shape and vector weight) against score-based fusion (a convex mix of each engine's scores, normalised by
min-max or by the top score), per half; chosen on the tune half only.

    .venv/bin/python tests/benchmarks/fusion_grid.py              # after search_quality.py has built the indexes
    .venv/bin/python tests/benchmarks/fusion_grid.py --test-code  # what test code's vectors are worth

Each query's two candidate lists (100 each, item level, with their scores) are read once, then
every rule ranks them with the priors of tasks/search.py (item_priors). Results:
tests/benchmarks/README.md, "Fusion rules".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["RCI_DATA_DIR"] = str(REPO / ".bench" / "search-data")

from tasks.search import Searcher, fusion_k, is_test_code, item_priors, query_shape  # noqa: E402
from tasks.session import load_embedder  # noqa: E402
from tasks.settings import load_settings  # noqa: E402
from tests.benchmarks.corpora import crate_source  # noqa: E402
from tests.benchmarks.metrics import mean, scores  # noqa: E402
from tests.benchmarks.search_quality import EVALUATED, load, load_test_code  # noqa: E402


SETTINGS = load_settings()


def candidates(query_sets: dict[str, list[dict]] | None = None) -> list[dict]:
    """Per query: each engine's items (best window first) as item id -> [path, symbol, kind, score].
    `query_sets`: crate -> queries; the evaluation's by default."""
    model = load_embedder(load_settings())
    out = []
    for crate, queries in (query_sets or {crate: load(crate) for crate in EVALUATED}).items():
        searcher = Searcher(crate_source(crate, REPO / ".bench"), embedder=model)
        store = searcher.tantivy
        for q in queries:
            query = store.build_query(q["query"])
            store.index.reload()
            found = store.index.searcher()
            bm25 = [(found.doc(a)["id"][0], s) for s, a in found.search(query, limit=100).hits] if query else []
            vector = [(h.id, h.score) for h in searcher._vector_search(q["query"], 100, [], None)]
            meta = store.by_ids(list({i for i, _ in bm25 + vector}))

            def items(ranking):
                best: dict[str, list] = {}
                for chunk_id, score in ranking:
                    if chunk_id in meta:
                        m = meta[chunk_id]
                        best.setdefault(m.item_id, [m.path, m.symbol, m.kind, score])
                return best

            out.append({"q": q, "bm25": items(bm25), "vector": items(vector)})
        searcher.close()
    return out


def alone(ranking: dict) -> dict:
    """One engine's own order as scores."""
    return {item: 1 / rank for rank, item in enumerate(ranking, 1)}


def rrf(e: dict, k: int = 30, vector_weight: float = 1.0) -> dict:
    fused: dict[str, float] = {}
    for weight, ranking in ((1.0, e["bm25"]), (vector_weight, e["vector"])):
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


def rrf_by_shape(e: dict, k: int = 30, k_identifier: int = 30) -> dict:
    """RRF with its own k for identifier-shaped queries (tasks.search.query_shape)."""
    return rrf(e, k_identifier if query_shape(e["q"]["query"]) == "identifier" else k)


def default(e: dict) -> dict:
    """The fusion `rci search` does (tasks.search.fusion_k with the default settings)."""
    return rrf(e, fusion_k(e["q"]["query"], "hybrid", SETTINGS))


def normalised(ranking: dict, how: str) -> dict:
    values = [v[3] for v in ranking.values()]
    if not values:
        return {}
    hi, lo = max(values), min(values)
    if how == "minmax":
        return {i: (v[3] - lo) / (hi - lo) if hi > lo else 1.0 for i, v in ranking.items()}
    return {i: v[3] / hi if hi else 0.0 for i, v in ranking.items()}


def convex(e: dict, vector_share: float, how: str) -> dict:
    b, v = normalised(e["bm25"], how), normalised(e["vector"], how)
    return {i: (1 - vector_share) * b.get(i, 0.0) + vector_share * v.get(i, 0.0) for i in set(b) | set(v)}


def top10(e: dict, fused: dict) -> list[tuple[str, str]]:
    meta = {**e["vector"], **e["bm25"]}
    factors = item_priors({i: tuple(v[:3]) for i, v in meta.items()}, e["q"]["query"])
    order = sorted(fused, key=lambda i: -fused[i] * factors[i])
    return [(meta[i][0], meta[i][1]) for i in order[:10]]


def evaluate(data: list[dict], rule, half: str, kind: str | None = None) -> dict:
    rows = [
        scores(top10(e, rule(e)), {(x["file"], x["symbol"]) for x in e["q"]["expect"]})
        for e in data if e["q"]["half"] == half and kind in (None, e["q"]["type"])
    ]  # fmt: skip
    return mean(rows)


def without_test_code_vectors(e: dict) -> dict:
    """The candidates as if test code had no vectors (BM25 still holds it)."""
    return {**e, "vector": {i: v for i, v in e["vector"].items() if not is_test_code(v[0], v[1])}}


def test_code_table(data: list[dict]) -> None:
    """Hybrid (RRF k=30) and the vector engine, with and without test code's vectors, per half, on
    the evaluation and on the queries whose answers are tests (queries/test-code.json)."""
    by_crate: dict[str, list[dict]] = {}
    for q in load_test_code():
        by_crate.setdefault(q["crate"], []).append(q)
    tests_data = candidates(by_crate)
    rules = {
        "hybrid": default,
        "hybrid, no test-code vectors": lambda e: default(without_test_code_vectors(e)),
        "vector": lambda e: alone(e["vector"]),
        "vector, no test-code vectors": lambda e: alone(without_test_code_vectors(e)["vector"]),
    }
    print("\n| query set, half | rule | R@1 | R@10 | MRR@10 | nDCG@10 |\n| --- | --- | --- | --- | --- | --- |")
    for label, rows in (("evaluation", data), ("test-code queries", tests_data)):
        for half in ("tune", "test"):
            for name, rule in rules.items():
                m = evaluate(rows, rule, half)
                count = sum(1 for e in rows if e["q"]["half"] == half)
                print(f"| {label}, {half} ({count}) | {name} | {m['recall@1']:.3f} | {m['recall@10']:.3f} | "
                      f"{m['mrr@10']:.3f} | {m['ndcg@10']:.3f} |")  # fmt: skip


def main() -> None:
    data = candidates()
    if "--test-code" in sys.argv:
        test_code_table(data)
        return
    rules = {"bm25 alone": lambda e: alone(e["bm25"]), "vector alone": lambda e: alone(e["vector"])}
    for k in (10, 30, 60):
        for weight in (1.0, 1.5):
            rules[f"rrf k={k}, vector x{weight}"] = lambda e, k=k, w=weight: rrf(e, k, w)
    for k_identifier in (5, 10, 20):
        rules[f"rrf k=30, identifier-shaped queries k={k_identifier}"] = lambda e, k=k_identifier: rrf_by_shape(e, 30, k)
    rules["default (tasks.search.fusion_k)"] = default
    for how in ("minmax", "max"):
        for share in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            rules[f"convex {how}, vector {share}"] = lambda e, s=share, h=how: convex(e, s, h)
    print("| rule | tune R@10 | tune MRR@10 | test R@10 | test MRR@10 | test descriptions R@10 | test identifiers MRR@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, rule in rules.items():
        tune, test = evaluate(data, rule, "tune"), evaluate(data, rule, "test")
        described, named = evaluate(data, rule, "test", "description"), evaluate(data, rule, "test", "identifier")
        print(f"| {name} | {tune['recall@10']:.3f} | {tune['mrr@10']:.3f} | {test['recall@10']:.3f} | "
              f"{test['mrr@10']:.3f} | {described['recall@10']:.3f} | {named['mrr@10']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
