"""Search quality on real crates: Recall@1/5/10, MRR@10 and nDCG@10 per engine, and query latency.

    .venv/bin/python tests/benchmarks/search_quality.py --skip-latency   # ~25 min the first time (indexes 7 crates)
    .venv/bin/python tests/benchmarks/search_quality.py --tune           # also the grid, on the tune half only
    .venv/bin/python tests/benchmarks/search_quality.py --peer           # also the LlamaIndex peer (the `peer` extra)
    RCI_MODEL_PATH=<folder> .venv/bin/python tests/benchmarks/search_quality.py --work <dir>  # another model's indexes

Query sets (tests/benchmarks/queries/*.json, 298 queries over clap, regex, rayon, syn, nom,
serde and cargo; written from each crate's code with tests/benchmarks/list_items.py, before
any search result was seen) name the expected items by file and qualified name: plain-English
descriptions of what an item does (without its name), half-remembered identifiers, and mixed
phrasing. Each query belongs to a tune or a test half (tests/benchmarks/split_queries.py);
defaults are chosen on the tune half, and both are reported. Each expected item counts once (tests/benchmarks/metrics.py).
None of those items is test code: queries/test-code.json (42 queries whose answers are tests, in
its own halves) is reported on its own, per engine.
Crates are Debian's, pinned by version (tests/benchmarks/corpora.py). Latency is measured on
the ~1,000-file medium corpus with the embedded stores, in this process, after one warm-up query.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tasks.search import KIND_PRIOR, SHAPE_WEIGHTS  # noqa: E402
from tests.benchmarks.corpora import corpus, crate_source  # noqa: E402
from tests.benchmarks.metrics import mean, scores  # noqa: E402

QUERIES = Path(__file__).resolve().parent / "queries"
MODES = ("pipeline", "parallel", "sequential")  # bench_indexing.py names its trees and indexes by them
CRATES = ("clap", "regex")  # the first query sets, held in the medium corpus (bench_search.py, bench_mcp.py)
EVALUATED = ("clap", "regex", "rayon", "syn", "nom", "serde", "cargo")  # tokio and itertools: reserved for independent checks
HALVES = ("tune", "test")  # tests/benchmarks/split_queries.py
KINDS = ("description", "identifier", "mixed")
ENGINES = ("bm25", "vector", "hybrid")
METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
WEIGHT_PRESETS = {
    "flat": {"name": 1, "name_parts": 1, "doc": 1, "code": 1, "code_parts": 1, "context": 1},
    "no identifier parts": {"name": 3, "name_parts": 0, "doc": 1.5, "code": 1, "code_parts": 0, "context": 0.5},
    "name > doc > body": {"name": 3, "name_parts": 2, "doc": 1.5, "code": 1, "code_parts": 0.5, "context": 0.5},
    "name > doc > body, no path": {"name": 3, "name_parts": 2, "doc": 1.5, "code": 1, "code_parts": 0.5, "context": 0},
    "name > doc > body, path": {"name": 3, "name_parts": 2, "doc": 1.5, "code": 1, "code_parts": 0.5, "context": 1.5},
    "name >> doc > body": {"name": 5, "name_parts": 3, "doc": 2, "code": 1, "code_parts": 0.5, "context": 0.5},
    "doc heavy": {"name": 3, "name_parts": 2, "doc": 3, "code": 1, "code_parts": 0.5, "context": 0.5},
    "mild: name 1.25, doc 1.1": {"name": 1.25, "name_parts": 1.25, "doc": 1.1, "code": 1, "code_parts": 1, "context": 1},
}

def index(root: Path, data_dir: Path) -> None:
    keep = ("RCI_MODEL_PATH",)  # a model to evaluate; the searcher in this process reads it too
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCI_", "PREFECT_API_URL")) or k in keep}
    env.update({"RCI_DATA_DIR": str(data_dir), "PREFECT_HOME": str(data_dir / "prefect-home")})
    (data_dir / "prefect-home").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    command = [str(Path(sys.executable).parent / "rci"), "index", str(root), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 and "built by an older version" in done.stderr:  # as the message advises
        done = subprocess.run([*command, "--force"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"indexing {root} failed: {done.stderr.strip()[-500:]}")
    stats = json.loads(done.stdout)
    print(f"indexed {root.name}: {stats['files_total']} files, {stats['chunks_total']} chunks "
          f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip

def load(crate: str) -> list[dict]:
    return json.loads((QUERIES / f"{crate}.json").read_text())["queries"]


def load_test_code() -> list[dict]:
    """The queries whose answers are tests, each naming its crate (queries/test-code.json)."""
    return json.loads((QUERIES / "test-code.json").read_text())["queries"]

def check_expected(searcher, queries: list[dict]) -> None:
    """Every expected item must be in the index, or the query set is wrong."""
    from tantivy import Occur, Query

    schema = searcher.tantivy.schema
    missing = []
    for q in queries:
        for e in q["expect"]:
            query = Query.boolean_query([
                (Occur.Must, Query.term_query(schema, "path", e["file"])),
                (Occur.Must, Query.term_query(schema, "symbol", e["symbol"])),
            ])  # fmt: skip
            if not searcher.tantivy._run(query, 1):
                missing.append(f"{e['file']} {e['symbol']}")
    if missing:
        raise SystemExit("expected items not in the index:\n  " + "\n  ".join(missing))

def scored(searcher, queries: list[dict], engine: str, **options) -> list[tuple[dict, dict]]:
    """(query, its metrics) for each query."""
    out = []
    for q in queries:
        results = searcher.search(q["query"], limit=10, engine=engine, **options)
        out.append((q, scores([(r.file, r.symbol) for r in results], {(e["file"], e["symbol"]) for e in q["expect"]})))
    return out


def summary(rows: list[tuple[dict, dict]]) -> dict:
    """Means over the queries: all of them and by query kind."""
    by_type: dict[str, list[dict]] = {}
    for q, row in rows:
        by_type.setdefault(q["type"], []).append(row)
    return {"all": mean([row for _, row in rows]), **{t: mean(r) for t, r in by_type.items()}}


def evaluate(searcher, queries: list[dict], engine: str, **options) -> dict:
    return summary(scored(searcher, queries, engine, **options))

def tests_tables(searchers: dict, crates: list[str]) -> list[str]:
    """Per half, each engine on the queries whose answers are tests (queries/test-code.json): the
    evaluation's own expected items are never test code, so what ranking does to tests shows here."""
    for_tests = [q for q in load_test_code() if q["crate"] in crates]
    if not for_tests:
        return []
    found = {}
    for crate in {q["crate"] for q in for_tests}:
        check_expected(searchers[crate], [q for q in for_tests if q["crate"] == crate])
    for engine in ENGINES:
        found[engine] = [row for c in crates for row in scored(searchers[c], [q for q in for_tests if q["crate"] == c], engine)]
    out = []
    for half in HALVES:
        rows = {engine: summary([(q, r) for q, r in found[engine] if q["half"] == half])["all"] for engine in ENGINES}
        count = sum(1 for q in for_tests if q["half"] == half)
        out.append(table(f"queries for tests, {half} half ({count} queries)", rows))
    return out


def table(title: str, rows: dict[str, dict]) -> str:
    lines = [f"\n**{title}**\n", "| | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for label, metrics in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{metrics[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)

def tune(searchers: dict, queries: dict) -> list[str]:
    """The grid behind the defaults, on the tune half only: BM25 field weights first, then RRF k
    and candidates."""
    out = []
    queries = {c: [q for q in qs if q["half"] == "tune"] for c, qs in queries.items()}
    tuned = [c for c in queries if queries[c]]
    both = lambda engine, **o: summary([r for c in tuned for r in scored(searchers[c], queries[c], engine, **o)])["all"]  # noqa: E731
    weight_rows = {}
    for name, weights in WEIGHT_PRESETS.items():
        for c in tuned:
            searchers[c].tantivy.weights = dict(weights)
        weight_rows[f"bm25, {name}"] = both("bm25")
        weight_rows[f"hybrid, {name}"] = both("hybrid")
    out.append(table("field weights (tune half)", weight_rows))
    best = max(WEIGHT_PRESETS, key=lambda n: weight_rows[f"hybrid, {n}"]["mrr@10"] + weight_rows[f"hybrid, {n}"]["recall@10"])
    for c in tuned:
        searchers[c].tantivy.weights = dict(WEIGHT_PRESETS[best])
    fusion_rows = {}
    for prior in (True, False):
        for c in tuned:
            searchers[c].kind_prior = dict(KIND_PRIOR) if prior else {}
        for k in (10, 30, 60):
            for candidates in (50, 100):
                label = f"k={k}, candidates={candidates}, " + ("impl/module x0.5" if prior else "no kind prior")
                fusion_rows[label] = both("hybrid", rrf_k=k, bm25_candidates=candidates, vector_candidates=candidates)
    for c in tuned:
        searchers[c].kind_prior = dict(KIND_PRIOR)
    out.append(table(f"hybrid fusion (weights: {best})", fusion_rows))
    shape_rows = {}
    for sentence_vector in (1.0, 1.5, 2.0):
        for identifier_bm25 in (1.0, 1.5, 2.0):
            for c in tuned:
                searchers[c].shape_weights = {"sentence": {"vector": sentence_vector}, "identifier": {"bm25": identifier_bm25}}
            shape_rows[f"sentences: vector x{sentence_vector}, identifiers: bm25 x{identifier_bm25}"] = both("hybrid")
    for c in tuned:
        searchers[c].shape_weights = {shape: dict(w) for shape, w in SHAPE_WEIGHTS.items()}
    out.append(table("hybrid, engine weights by query shape (tasks.search.query_shape)", shape_rows))
    return out

def peer_table(half: str, searchers: dict, roots: dict, queries: dict, work: Path) -> str:
    """The peer (tests/benchmarks/peer_pipeline.py) against rci on one half, both scored by lines
    (tests/benchmarks/bench_peer.py, by_lines): the peer's chunks carry no item names."""
    from tests.benchmarks.bench_peer import score_both
    from tests.benchmarks.peer_pipeline import index_with_llamaindex, model_folder

    rows: dict[str, list] = {}
    for crate, root in roots.items():
        store = work / "peer-stores" / crate
        if not (store / ".complete").exists():
            index_with_llamaindex(root, store, model_folder())
            (store / ".complete").touch()
        in_half = [q for q in queries[crate] if q["half"] == half]
        for system, found in score_both(root, searchers[crate], store, in_half).items():
            if "by name" not in system:
                rows.setdefault(system.replace(", by lines", ""), []).extend(found)
    table_rows = {}
    for kind in (None, *KINDS):
        for system, found in rows.items():
            kept = [(q, r) for q, r in found if kind in (None, q["type"])]
            if kept:
                table_rows[system if kind is None else f"{system}, {kind}"] = summary(kept)["all"]
    count = len(next(iter(rows.values()), []))
    return table(f"{half} half against the peer, a result found when its lines overlap the item's ({count} queries)", table_rows)


def latency(searcher, texts: list[str]) -> tuple[float, float]:
    searcher.search(texts[0])  # warm-up: first model call
    times = []
    for text in texts:
        started = time.perf_counter()
        searcher.search(text, limit=10)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    parser.add_argument("--tune", action="store_true", help="also run the tuning grid (on the tune half)")
    parser.add_argument("--crates", default=",".join(EVALUATED), help="comma-separated query sets to evaluate")
    parser.add_argument("--skip-latency", action="store_true", help="skip indexing the medium corpus for latency")
    parser.add_argument("--peer", action="store_true", help='also the LlamaIndex peer (pip install -e ".[peer]"), by lines')
    args = parser.parse_args()
    data = args.work / "search-data"
    os.environ["RCI_DATA_DIR"] = str(data)

    from tasks.search import Searcher
    from tasks.session import load_embedder
    from tasks.settings import load_settings

    crates = [c for c in args.crates.split(",") if c]
    roots = {crate: crate_source(crate, args.work) for crate in crates}
    for root in roots.values():
        index(root, data)
    model = load_embedder(load_settings())
    searchers = {crate: Searcher(root, embedder=model) for crate, root in roots.items()}
    queries = {crate: load(crate) for crate in crates}
    rows = {(crate, engine): scored(searchers[crate], queries[crate], engine) for crate in crates for engine in ENGINES}
    report = []

    def by_kind(title: str, picked) -> str:
        """Per engine, then per engine and query kind, over the queries `picked(crate, query)` keeps."""
        lines = {}
        for kind in (None, *KINDS):
            for engine in ENGINES:
                kept = [(q, r) for c in crates for q, r in rows[(c, engine)] if picked(c, q) and kind in (None, q["type"])]
                if kept:
                    lines[engine if kind is None else f"{engine}, {kind}"] = summary(kept)["all"]
        count = sum(1 for c in crates for q in queries[c] if picked(c, q))
        return table(f"{title} ({count} queries)", lines)

    for crate in crates:
        check_expected(searchers[crate], queries[crate])
        report.append(by_kind(crate, lambda c, q, crate=crate: c == crate))
        print(report[-1], flush=True)
    for half in HALVES:
        report.append(by_kind(f"{half} half, every crate", lambda c, q, half=half: q["half"] == half))
        print(report[-1], flush=True)
    for block in tests_tables(searchers, crates):
        report.append(block)
        print(block, flush=True)
    if {"clap", "regex"} <= set(crates):  # the figures the README reported before the other crates came
        report.append(by_kind("clap + regex", lambda c, q: c in ("clap", "regex")))
        print(report[-1], flush=True)
    if args.peer:
        for half in HALVES:
            report.append(peer_table(half, searchers, roots, queries, args.work))
            print(report[-1], flush=True)
    if args.tune:
        for block in tune(searchers, queries):
            print(block, flush=True)
            report.append(block)
    if not args.skip_latency:
        # bench_indexing.py leaves an index of the medium corpus (one per mode it ran); reuse one
        # rather than embed 30k chunks again.
        left = [(args.work / "trees" / f"medium-{mode}", args.work / "data" / f"medium-{mode}") for mode in MODES]
        medium, medium_data = next(((t, d) for t, d in left if t.is_dir() and d.is_dir()), (None, data))
        medium = medium or corpus("medium", args.work)
        index(medium, medium_data)
        # The searcher's own query encoder, as `rci search` and the MCP server have: the indexing
        # model's lean session pays about 15 ms more per query.
        searcher = Searcher(medium, settings=load_settings().model_copy(update={"data_dir": medium_data}))
        texts = [q["query"] for c in crates for q in queries[c]]
        p50, p95 = latency(searcher, texts)
        line = f"\nhybrid query latency on the medium corpus ({len(texts)} queries): p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        print(line, flush=True)
        report.append(line)
    (args.work / "search-quality.md").write_text("\n".join(report) + "\n")

if __name__ == "__main__":
    main()
