"""rci against the pipeline a user would assemble (LlamaIndex), side by side in one run.

    .venv/bin/pip install -e ".[peer]"                                     # the peer's packages
    .venv/bin/python tests/benchmarks/bench_peer.py                        # tokio, cold (~10 min)
    .venv/bin/python tests/benchmarks/bench_peer.py --crates cargo,syn,nom # + both scored on their queries

For each crate (Debian's, pinned: tests/benchmarks/corpora.py), one after the other and cold
(a fresh data folder, so an empty embedding cache, and a fresh peer store): `rci index` in the
recommended mode, as a user runs it (Prefect's temporary server included), then the peer
(tests/benchmarks/peer_pipeline.py: CodeSplitter + FastEmbedEmbedding of the same model files +
a local Qdrant store). Printed: wall seconds, peak RSS of the whole process tree (sampled every
0.5 s, the same way for both), chunks, tokens embedded (each text counted up to the model's 256),
and the ratios. For crates of the search evaluation, both indexes then answer its queries and are
scored with one hit rule: a result finds an expected item when it is in the same file and its
lines overlap the item's (the peer's chunks have no item names; tests/benchmarks/metrics.py counts
each expected item once). rci's results are also scored by name, as search_quality.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_indexing import RCI, set_prefect_home  # noqa: E402
from tests.benchmarks.corpora import crate_source  # noqa: E402
from tests.benchmarks.metrics import mean, scores  # noqa: E402
from tests.benchmarks.search_quality import EVALUATED, KINDS, load  # noqa: E402

PEER = REPO / "tests" / "benchmarks" / "peer_pipeline.py"


def run_tree(argv: list[str], env: dict, every: float = 0.5) -> tuple[str, float, float]:
    """One command: its stdout, wall seconds, and the peak of its process tree's summed RSS (MB)."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as on a user's machine
    started, peak = time.perf_counter(), 0.0
    with open(os.devnull, "w") as null:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=null, text=True, env=env)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()) / (1 << 20))
            except psutil.Error:
                pass
            time.sleep(every)
        stdout = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} exited with {process.returncode}")
    return stdout, time.perf_counter() - started, peak


def index_both(crate: str, work: Path) -> dict:
    root = crate_source(crate, work)
    data, store = work / "peer-bench" / crate / "rci", work / "peer-bench" / crate / "peer"
    shutil.rmtree(data.parent, ignore_errors=True)
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCI_", "PREFECT_API_URL"))}
    from tests.benchmarks import bench_indexing

    out, rci_wall, rci_peak = run_tree([RCI, "index", str(root), "--json"],
                                       {**env, "RCI_DATA_DIR": str(data), "PREFECT_HOME": str(bench_indexing.PREFECT_HOME)})  # fmt: skip
    stats = json.loads(out)
    out, peer_wall, peer_peak = run_tree([sys.executable, str(PEER), str(root), str(store), "--index-only"],
                                         {**env, "RCI_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"})  # fmt: skip
    peer = json.loads(out.strip().splitlines()[-1])
    return {
        "crate": crate, "root": root, "data": data, "store": store,
        "rci": {"wall_s": rci_wall, "peak_mb": rci_peak, "chunks": stats["chunks_total"],
                "tokens": stats["tokens_embedded"], "mode": stats["mode"]},
        "peer": {"wall_s": peer_wall, "peak_mb": peer_peak, "chunks": peer["chunks"], "tokens": peer["tokens_embedded"]},
    }  # fmt: skip


def item_lines(root: Path) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Every item's lines by (file, qualified name), as the indexer's parser names them."""
    from tasks.discover import discover
    from tasks.parse import module_path, parse_file
    from tasks.prepare import read_source
    from tasks.settings import load_settings

    lines: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for source in discover(root, load_settings().max_file_bytes).files:
        data, _ = read_source(source)
        if data is not None:
            for item in parse_file(source.rel_path, data, module_path(root, source.rel_path)).items:
                lines.setdefault((source.rel_path, item.qualified_name), []).append((item.start_line, item.end_line))
    return lines


def by_lines(results: list[tuple[str, int, int]], expected: list[tuple[str, str]], lines: dict) -> dict:
    """The metrics under the line rule: each result stands for the first expected item it overlaps."""
    ranked = []
    for file, start, end in results:
        overlapped = (key for key in expected if key[0] == file and any(s <= end and start <= e for s, e in lines[key]))
        ranked.append(next(overlapped, (file, start, end)))
    return scores(ranked, set(expected))


def score_both(root: Path, searcher, store: Path, queries: list[dict]) -> dict[str, list[tuple[dict, dict]]]:
    """(query, metrics) per system on one crate: rci's engines (`searcher`, a tasks.search.Searcher)
    by lines and by name, the peer's index at `store` by lines."""
    from tests.benchmarks.peer_pipeline import PeerSearcher, model_folder

    lines, peer = item_lines(root), PeerSearcher(store, model_folder())
    rows: dict[str, list] = {}
    try:
        for q in queries:
            expected = [(e["file"], e["symbol"]) for e in q["expect"]]
            for engine in ("hybrid", "bm25", "vector"):
                found = searcher.search(q["query"], limit=10, engine=engine)
                spans = [(r.file, r.start_line, r.end_line) for r in found]
                rows.setdefault(f"rci {engine}, by lines", []).append((q, by_lines(spans, expected, lines)))
                rows.setdefault(f"rci {engine}, by name", []).append((q, scores([(r.file, r.symbol) for r in found], set(expected))))
            rows.setdefault("peer (LlamaIndex), by lines", []).append((q, by_lines(peer.search(q["query"], 10), expected, lines)))
    finally:
        peer.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crates", default="tokio", help="comma-separated crates, indexed one after the other")
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    args = parser.parse_args()
    set_prefect_home(args.work)
    runs = [index_both(crate, args.work) for crate in args.crates.split(",") if crate]
    print("| crate | system | wall s | peak RSS MB | chunks | tokens embedded |\n| --- | --- | --- | --- | --- | --- |")
    for run in runs:
        for system in ("rci", "peer"):
            r = run[system]
            label = f"rci index ({r['mode']})" if system == "rci" else "LlamaIndex pipeline"
            print(f"| {run['crate']} | {label} | {r['wall_s']:.1f} | {r['peak_mb']:,.0f} | {r['chunks']:,} | {r['tokens']:,} |")
        rci, peer = run["rci"], run["peer"]
        print(f"| {run['crate']} | rci / peer | {rci['wall_s'] / peer['wall_s']:.2f}x | {rci['peak_mb'] / peer['peak_mb']:.2f}x | "
              f"{rci['chunks'] / peer['chunks']:.2f}x | {rci['tokens'] / peer['tokens']:.2f}x |")  # fmt: skip
    scored = [run for run in runs if run["crate"] in EVALUATED]
    if not scored:
        return
    from tasks.search import Searcher
    from tasks.settings import load_settings

    rows: dict[str, list] = {}
    for run in scored:
        searcher = Searcher(run["root"], settings=load_settings().model_copy(update={"data_dir": run["data"]}))
        for system, found in score_both(run["root"], searcher, run["store"], load(run["crate"])).items():
            rows.setdefault(system, []).extend(found)
        searcher.close()
    print(f"\nSearch evaluation on {', '.join(r['crate'] for r in scored)} (every query, both halves)\n")
    print("| system | kind | queries | recall@1 | recall@5 | recall@10 | mrr@10 | ndcg@10 |\n|---|---|---|---|---|---|---|---|")
    for system, found in rows.items():
        for kind in (None, *KINDS):
            kept = [m for q, m in found if kind in (None, q["type"])]
            if kept:
                m = mean(kept)
                print(f"| {system} | {kind or 'all'} | {len(kept)} | " + " | ".join(f"{m[k]:.3f}" for k in m) + " |")


if __name__ == "__main__":
    main()
