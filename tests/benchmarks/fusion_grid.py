"""Fusion rules side by side on the search evaluation: reciprocal rank fusion (the default, k and
vector weight) against score-based fusion (a convex mix of each engine's scores, normalised by
min-max or by the top score), per half; chosen on the tune half only.

    .venv/bin/python tests/benchmarks/fusion_grid.py    # after search_quality.py has built the indexes

Each query's two candidate lists (100 each, item level, with their scores) are read once, then
every rule ranks them with the kind and test priors of tasks/search.py. Results:
tests/benchmarks/README.md, "Fusion rules".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["RCI_DATA_DIR"] = str(REPO / ".bench" / "search-data")

from tasks.search import KIND_PRIOR, TEST_PRIOR, Searcher, is_test_code  # noqa: E402
from tasks.session import load_embedder  # noqa: E402
from tasks.settings import load_settings  # noqa: E402
from tests.benchmarks.corpora import crate_source  # noqa: E402
from tests.benchmarks.metrics import mean, scores  # noqa: E402
from tests.benchmarks.search_quality import EVALUATED, load  # noqa: E402


def candidates() -> list[dict]:
    """Per query: each engine's items (best window first) as item id -> [path, symbol, kind, score]."""
    model = load_embedder(load_settings())
    out = []
    for crate in EVALUATED:
        searcher = Searcher(crate_source(crate, REPO / ".bench"), embedder=model)
        store = searcher.tantivy
        for q in load(crate):
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


def prior(path: str, symbol: str, kind: str) -> float:
    return KIND_PRIOR.get(kind, 1.0) * (TEST_PRIOR if is_test_code(path, symbol) else 1.0)


def rrf(e: dict, k: int = 30, vector_weight: float = 1.0) -> dict:
    fused: dict[str, float] = {}
    for weight, ranking in ((1.0, e["bm25"]), (vector_weight, e["vector"])):
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return fused


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
    order = sorted(fused, key=lambda i: -fused[i] * prior(*meta[i][:3]))
    return [(meta[i][0], meta[i][1]) for i in order[:10]]


def evaluate(data: list[dict], rule, half: str, kind: str | None = None) -> dict:
    rows = [
        scores(top10(e, rule(e)), {(x["file"], x["symbol"]) for x in e["q"]["expect"]})
        for e in data if e["q"]["half"] == half and kind in (None, e["q"]["type"])
    ]  # fmt: skip
    return mean(rows)


def main() -> None:
    data = candidates()
    rules = {"bm25 alone": lambda e: {i: 1 / r for r, i in enumerate(e["bm25"], 1)},
             "vector alone": lambda e: {i: 1 / r for r, i in enumerate(e["vector"], 1)}}  # fmt: skip
    for k in (10, 30, 60):
        for weight in (1.0, 1.5):
            rules[f"rrf k={k}, vector x{weight}"] = lambda e, k=k, w=weight: rrf(e, k, w)
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
