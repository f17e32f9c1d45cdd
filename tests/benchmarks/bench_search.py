"""Search speed on the indexes bench_indexing.py leaves: what a user waits for, side by side.

    .venv/bin/python tests/benchmarks/bench_search.py                    # medium and large (~5 min)
    .venv/bin/python tests/benchmarks/bench_search.py --corpora medium

Per corpus:
- one `rci search` in a new process, as a user runs it (wall seconds and peak RSS; 3 queries,
  each 3 times: medians);
- a warm `Searcher` (what the MCP server keeps open): hybrid, bm25 and vector latency over the
  98 evaluation queries (tests/benchmarks/queries), 3 passes after a warm-up pass: p50 and p95;
- what the HNSW graphs cost in recall: the 100 nearest chunks the graphs return against an
  exact search of every point, for the same queries (recall@10 and recall@100);
- and in search quality: the evaluation's clap and regex queries on this corpus (which holds
  both crates), hybrid and vector, with the graphs (int8 copies rescored or not) and exact.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_indexing import measure_rci, set_prefect_home  # noqa: E402
from tests.benchmarks.search_quality import CRATES, load  # noqa: E402

# Where bench_indexing.py leaves each corpus: (its tree, its data folder).
INDEXES = {"medium": ("trees/medium-pipeline", "data/medium-pipeline"), "large": ("corpora/large", "data/large-auto")}
ONE_OFF_QUERIES = ("parse command line arguments", "retry a failed request", "serialize a struct")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def one_off(root: Path, data: Path) -> dict:
    walls, peaks = [], []
    measure_rci(["search", str(root), "warm-up", "--json"], data)  # bytecode caches, page cache
    for query in ONE_OFF_QUERIES:
        for _ in range(3):
            _, wall, peak = measure_rci(["search", str(root), query, "--json"], data)
            walls.append(wall)
            peaks.append(peak)
    return {"one_off_wall_s": round(statistics.median(walls), 3), "one_off_peak_rss_mb": round(statistics.median(peaks), 1)}


def warm(root: Path, data: Path, texts: list[str]) -> dict:
    from tasks.search import Searcher
    from tasks.settings import load_settings

    searcher = Searcher(root, settings=load_settings(data_dir=data))
    figures = {}
    try:
        for engine in ("hybrid", "bm25", "vector"):
            for text in texts:  # warm-up: model, pages of the index
                searcher.search(text, engine=engine)
            times = []
            for _ in range(3):
                for text in texts:
                    started = time.perf_counter()
                    searcher.search(text, limit=10, engine=engine)
                    times.append((time.perf_counter() - started) * 1000)
            figures[f"{engine}_p50_ms"] = round(statistics.median(times), 1)
            figures[f"{engine}_p95_ms"] = round(percentile(times, 0.95), 1)
        figures["points"] = searcher._warm_vectors._open().count()
        figures["graphs"] = searcher._warm_vectors._open().graphs_built()
        figures.update(graph_recall(searcher, texts))
        figures["quality"] = corpus_quality(searcher, root)
    finally:
        searcher.close()
    return figures


def graph_recall(searcher, texts: list[str]) -> dict:
    """The graphs' 100 nearest against an exact search's, per query, averaged."""
    store = searcher._warm_vectors._open()
    at10, at100 = [], []
    for text in texts:
        vector = searcher.embedder.embed_query(text)
        approximate = [hit.id for hit in store.search(vector, 100)]
        exact = [hit.id for hit in store.search(vector, 100, exact=True)]
        at10.append(len(set(approximate[:10]) & set(exact[:10])) / 10)
        at100.append(len(set(approximate) & set(exact)) / 100)
    return {"graph_recall@10": round(statistics.mean(at10), 4), "graph_recall@100": round(statistics.mean(at100), 4)}


def corpus_quality(searcher, root: Path) -> dict:
    """The evaluation's queries on a corpus holding their crates, under each vector search setting."""
    from qdrant_edge import QuantizationSearchParams

    from tasks import edge_store
    from tests.benchmarks.search_quality import evaluate

    folders = {crate: next(p.name for p in root.iterdir() if p.name.startswith(f"{crate}-")) for crate in CRATES}
    queries = [
        {**q, "expect": [{**e, "file": f"{folders[crate]}/{e['file']}"} for e in q["expect"]]}
        for crate in CRATES
        for q in load(crate)
    ]
    settings = {
        "graphs, int8 rescored": (QuantizationSearchParams(rescore=True, oversampling=2.0), False),
        "graphs, int8 only": (QuantizationSearchParams(rescore=False), False),
        "exact": (None, True),
    }
    rows = {}
    chosen = edge_store.RESCORE
    search = edge_store.EdgeStore.search
    try:
        for label, (rescore, exact) in settings.items():
            edge_store.RESCORE = rescore or chosen
            edge_store.EdgeStore.search = lambda self, *a, exact_=exact, **k: search(self, *a, exact=exact_, **k)
            for engine in ("hybrid", "vector"):
                rows[f"{engine}, {label}"] = evaluate(searcher, queries, engine)["all"]
    finally:
        edge_store.RESCORE, edge_store.EdgeStore.search = chosen, search
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="medium,large")
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    args = parser.parse_args()
    set_prefect_home(args.work)
    texts = [q["query"] for crate in CRATES for q in load(crate)]
    results = {}
    for name in [c for c in args.corpora.split(",") if c]:
        tree, data = (args.work / part for part in INDEXES[name])
        if not (data.is_dir() and tree.is_dir()):
            sys.exit(f"no index of the {name} corpus under {args.work}: run bench_indexing.py first")
        row = one_off(tree, data)
        print(f"[{name}] one rci search: {row['one_off_wall_s']} s, peak RSS {row['one_off_peak_rss_mb']} MB", flush=True)
        row.update(warm(tree, data, texts))
        print(f"[{name}] {json.dumps(row)}", flush=True)
        results[name] = row
    out = args.work / "bench-search.json"
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged.update(results)
    out.write_text(json.dumps(merged, indent=2))
    print("\n| corpus | points | graphs | one `rci search` s / peak MB | hybrid p50 / p95 ms | bm25 p50 ms | vector p50 ms | graph recall@10 / @100 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['points']:,} | {r['graphs']} | {r['one_off_wall_s']} / {r['one_off_peak_rss_mb']} | "
              f"{r['hybrid_p50_ms']} / {r['hybrid_p95_ms']} | {r['bm25_p50_ms']} | {r['vector_p50_ms']} | "
              f"{r['graph_recall@10']} / {r['graph_recall@100']} |")  # fmt: skip
    from tests.benchmarks.search_quality import table

    for name, r in results.items():
        print(table(f"{name}: clap + regex queries ({len(texts)}) on the whole corpus", r["quality"]))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
