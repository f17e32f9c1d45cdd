"""Indexing benchmark: every mode on real Rust code, side by side in one run.

    .venv/bin/python tests/benchmarks/bench_indexing.py                # small + medium + large (~3 h on 2 cores)
    .venv/bin/python tests/benchmarks/bench_indexing.py --corpora small --skip-large   # ~10 min
    .venv/bin/python tests/benchmarks/bench_indexing.py --corpora ""  # the large corpus alone (~90 min)
    .venv/bin/python tests/benchmarks/bench_indexing.py --corpora "" --large-warm  # its warm runs (~10 min)
    .venv/bin/python tests/benchmarks/bench_indexing.py --corpora medium --warm --large-warm  # every warm run (~25 min)

Every measurement is a fresh `rci index ... --json` process, as a user runs it, with
Prefect's temporary server (no PREFECT_API_URL): wall time includes start-up. Per mode on
the medium corpus: cold full index; no-change rerun; rerun after changing 10 files; force
reindex with a warm embedding cache. The embed-only limit is the same distinct texts
through the same model in one length-sorted pass, nothing else. The large corpus runs in
the recommended mode to show memory: cold, then forced with the warm cache. One `rci search`
per corpus (3 queries) shows what a search costs. Short scenarios run 3 times (median); cold
runs once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.corpora import CORPORA, corpus  # noqa: E402

RCI = str(Path(sys.executable).parent / "rci")
MODES = ("sequential", "parallel", "pipeline")
RUN_STAMP = int(time.time())  # in the edits' text: a --warm run's edits are new text, never in the cache


PREFECT_HOME: Path | None = None  # one for the whole benchmark: its database is migrated once


def set_prefect_home(work: Path) -> None:
    """One Prefect home for every rci the benchmarks start: its database is migrated once."""
    global PREFECT_HOME
    PREFECT_HOME = work / "prefect-home"
    PREFECT_HOME.mkdir(parents=True, exist_ok=True)


def run_rci(args: list[str], data_dir: Path, timeline: list | None = None, every: float = 0.5) -> tuple[str, float]:
    """One `rci ...` process, as a user runs it: its stdout and wall seconds; `timeline` collects
    (seconds, RSS MB) of it every `every` seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCI_", "PREFECT_API_URL"))}
    env.update({"RCI_DATA_DIR": str(data_dir), "PREFECT_HOME": str(PREFECT_HOME)})
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([RCI, *args], stdout=out, stderr=err, text=True, env=env)
        while process.poll() is None:
            if timeline is not None:
                try:
                    timeline.append((time.perf_counter() - started, psutil.Process(process.pid).memory_info().rss / (1 << 20)))
                except psutil.Error:
                    pass
            time.sleep(every)
        wall = time.perf_counter() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"rci {' '.join(args)} failed: {stderr.strip()[-800:]}")
    return stdout, wall


def measure_rci(args: list[str], data_dir: Path) -> tuple[str, float, float]:
    """One `rci ...` process with nothing polling it: its stdout, wall seconds and peak RSS in MB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCI_", "PREFECT_API_URL"))}
    env.update({"RCI_DATA_DIR": str(data_dir), "PREFECT_HOME": str(PREFECT_HOME)})
    return measure_process([RCI, *args], env)


def measure_process(argv: list[str], env: dict) -> tuple[str, float, float]:
    """One process with nothing polling it (on 2 cores a sampler slows what it samples): its
    stdout, wall seconds and peak RSS in MB, from the kernel's accounting. Python writes its
    bytecode caches as on a user's machine (this sandbox's environment turns that off, which
    recompiles every edited module on every run)."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv[:3]))} failed: {stderr.strip()[-800:]}")
    return stdout, wall, usage.ru_maxrss / 1024  # ru_maxrss is in KB on Linux (the largest process waited for)


def run_index(args: list[str], data_dir: Path, timeline: list | None = None) -> tuple[dict, float]:
    """One `rci index ... --json`: the run's stats and wall seconds."""
    stdout, wall = run_rci(["index", *args, "--json"], data_dir, timeline)
    return json.loads(stdout), wall


def catch_up(tree: Path, mode: str, data_dir: Path) -> None:
    """--warm: bring an earlier run's index up to date with the tree's last edits, rebuilding
    it (from the cache) when it was written by an older version of the index's format."""
    try:
        run_index([str(tree), "--mode", mode], data_dir)
    except RuntimeError as error:
        if "--force" not in str(error):
            raise
        run_index([str(tree), "--mode", mode, "--force"], data_dir)


def search_row(root: Path, data_dir: Path) -> dict:
    """What one `rci search` costs a user on this index: wall seconds and peak RSS, medians of 3 queries."""
    walls, peaks = [], []
    measure_rci(["search", str(root), "warm-up", "--json"], data_dir)  # bytecode caches, page cache
    for query in ("parse command line arguments", "retry a failed request", "serialize a struct"):
        _, wall, peak = measure_rci(["search", str(root), query, "--json"], data_dir)
        walls.append(wall)
        peaks.append(peak)
    return {"scenario": "one `rci search` (median of 3 queries)", "mode": "-", "wall_s": round(sorted(walls)[1], 2),
            "peak_rss_mb": round(sorted(peaks)[1], 1)}  # fmt: skip


def embed_only(root: Path, data_dir: Path) -> dict:
    """Seconds to embed the corpus's distinct chunk texts in one length-sorted pass."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from tasks.chunk import Chunker
from tasks.discover import discover
from tasks.recommend import recommend
from tasks.session import load_embedder
from tasks.settings import load_settings
from tests.benchmarks.corpora import embedded_texts
root = Path({str(root)!r})
found = discover(root, load_settings().max_file_bytes)
plan = recommend(len(found.files), sum(f.size for f in found.files))
model = load_embedder(load_settings(), threads=plan.embed_threads * plan.workers, lean=not plan.fast_session)
texts = embedded_texts(root, Chunker(model.tokenizer(), min(256, model.max_tokens), 2))
started = time.perf_counter()
model.embed(list(texts), list(texts.values()))
print(json.dumps({{"texts": len(texts), "seconds": time.perf_counter() - started}}))
"""
    env = {**os.environ, "RCI_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def change_files(root: Path, count: int, round_: str) -> None:
    """Append one new function to `count` files: content changes that really need embedding."""
    files = sorted(root.rglob("*.rs"))
    step = max(len(files) // count, 1)
    for i, path in enumerate(files[::step][:count]):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"\n/// Benchmark edit {round_}.{i}: returns a marker value.\npub fn bench_marker_{round_}_{i}() -> u32 {{ {i} }}\n")


def row(label: str, stats: dict, wall: float, limit: float | None = None, base: float | None = None) -> dict:
    chunks = stats.get("chunks_written") or stats.get("chunks_total", 0)
    return {
        "scenario": label,
        "mode": stats["mode"],
        "files": stats["files_total"],
        "chunks": chunks,
        "embedded": stats.get("chunks_embedded", 0),
        "wall_s": round(wall, 2),
        "files_per_s": round(stats["files_total"] / wall, 1),
        "chunks_per_s": round(chunks / wall, 1) if chunks else 0.0,
        "peak_rss_mb": stats.get("peak_rss_mb", 0.0),
        "stages": stats.get("stage_seconds", {}),
        "vs_embed_only": round(wall / limit, 2) if limit else None,
        "speedup_vs_sequential": round(base / wall, 2) if base else None,
    }


def median_run(args, data_dir, setup=None, repeats=3):
    runs = []
    for i in range(repeats):
        if setup:
            setup(i)
        runs.append(run_index(args, data_dir))
    runs.sort(key=lambda r: r[1])
    return runs[len(runs) // 2]


def bench_corpus(name: str, work: Path, modes, full: bool, warm: bool = False, limit_run: bool = True) -> list[dict]:
    """`warm`: no embed-only limit and no cold runs; each mode's tree, index and cache from an
    earlier run of this benchmark are reused. `limit_run` False: cold runs without the embed-only limit."""
    source = corpus(name, work)
    rows: list[dict] = []
    limit = {"seconds": None}
    if not warm and limit_run:
        limit = embed_only(source, work / "data" / f"{name}-embed-only")
        print(f"[{name}] embed-only limit: {limit['texts']:,} distinct texts in {limit['seconds']:.1f} s", flush=True)
        rows.append({"scenario": "embed-only limit", "mode": "-", "chunks": limit["texts"], "wall_s": round(limit["seconds"], 2),
                     "chunks_per_s": round(limit["texts"] / limit["seconds"], 1)})  # fmt: skip
    cold_wall: dict[str, float] = {}
    for mode in modes:
        tree = work / "trees" / f"{name}-{mode}"  # each mode edits its own copy
        data = work / "data" / f"{name}-{mode}"
        if warm:
            if not (tree.is_dir() and data.is_dir()):
                sys.exit(f"--warm: no earlier run of {name} in {mode} mode under {work}; run without --warm first")
            catch_up(tree, mode, data)
        else:
            shutil.rmtree(tree, ignore_errors=True)
            shutil.copytree(source, tree, symlinks=True)
            shutil.rmtree(data, ignore_errors=True)
            stats, wall = run_index([str(tree), "--mode", mode], data)
            cold_wall[mode] = wall
            rows.append(row("cold full index", stats, wall, limit["seconds"], cold_wall.get("sequential")))
            print(f"[{name}] {mode}: cold {wall:.1f} s, peak RSS {stats['peak_rss_mb']:.0f} MB", flush=True)
        if mode == modes[0]:
            rows.append(search_row(tree, data))
            print(f"[{name}] one rci search: {rows[-1]['wall_s']} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
        if not full:
            continue
        stats, wall = median_run([str(tree), "--mode", mode], data)
        rows.append(row("no-change rerun", stats, wall))
        stats, wall = median_run([str(tree), "--mode", mode], data, setup=lambda i: change_files(tree, 10, f"{RUN_STAMP}_{i}"))
        rows.append(row("10 files changed", stats, wall))
        stats, wall = median_run([str(tree), "--mode", mode, "--force"], data)
        rows.append(row("force, warm cache", stats, wall, base=None))
        if mode in cold_wall:
            rows[-1]["vs_cold"] = round(wall / cold_wall[mode], 3)
        print(f"[{name}] {mode}: no-change {rows[-3]['wall_s']} s, 10 changed {rows[-2]['wall_s']} s, "
              f"force warm {wall:.1f} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return rows


def bench_large(work: Path, cold: bool = True) -> list[dict]:
    """The large corpus in the recommended mode: a cold index (unless `cold` is False: the cache
    a previous cold run left is reused), a force reindex with that warm cache, one search; with
    each run's RSS at each tenth of its wall time."""
    source = corpus("large", work)
    data = work / "data" / "large-auto"
    rows: list[dict] = []
    runs = [("cold full index (recommended)", [str(source)])] if cold else []
    runs.append(("force, warm cache (recommended)", [str(source), "--force"]))
    if cold:
        shutil.rmtree(data, ignore_errors=True)
    for label, args in runs:
        timeline: list[tuple[float, float]] = []
        stats, wall = run_index(args, data, timeline=timeline)
        rows.append(row(label, stats, wall))
        rows[-1]["rss_mb_by_tenth"] = [
            round(max((mb for t, mb in timeline if t <= wall * k / 10), default=0)) for k in range(1, 11)
        ]
        print(f"[large] {label}, {stats['mode']}: {wall:.0f} s, {stats['chunks_total']:,} chunks, peak RSS "
              f"{stats['peak_rss_mb']:.0f} MB; RSS by tenth of the run {rows[-1]['rss_mb_by_tenth']} MB", flush=True)  # fmt: skip
    rows.append(search_row(source, data))
    print(f"[large] one rci search: {rows[-1]['wall_s']} s, peak RSS {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def markdown(results: dict[str, list[dict]]) -> str:
    lines = []
    for name, rows in results.items():
        lines.append(f"\n**{name}**\n")
        lines.append("| scenario | mode | files | chunks | embedded | wall s | files/s | chunks/s | peak RSS MB | "
                     "x embed-only | speedup vs sequential | stages (s) |")  # fmt: skip
        lines.append("|" + "---|" * 12)
        for r in rows:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r.get("stages", {}).items() if v >= 0.05)
            extra = f" ({r['vs_cold']:.0%} of cold)" if "vs_cold" in r else ""
            lines.append(
                f"| {r['scenario']}{extra} | {r['mode']} | {r.get('files', '')} | {r.get('chunks', '')} | "
                f"{r.get('embedded', '')} | {r['wall_s']} | {r.get('files_per_s', '')} | {r.get('chunks_per_s', '')} | "
                f"{r.get('peak_rss_mb', '')} | {r.get('vs_embed_only') or ''} | {r.get('speedup_vs_sequential') or ''} | "
                f"{stages} |"
            )
        for r in rows:
            if "rss_mb_by_tenth" in r:
                lines.append(f"\n{r['scenario']}: RSS (MB) at each tenth of the run: {', '.join(map(str, r['rss_mb_by_tenth']))}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="small,medium", help="comma-separated: small, medium")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--skip-large", action="store_true", help="skip the large corpus (about 85 min)")
    parser.add_argument(
        "--large-warm", action="store_true", help="large corpus: reuse the cache of an earlier cold run (minutes)"
    )
    parser.add_argument(
        "--warm", action="store_true", help="small/medium: skip the cold runs, reuse each mode's index (minutes)"
    )
    parser.add_argument("--skip-embed-only", action="store_true", help="cold runs without the embed-only limit (15 min less)")
    parser.add_argument("--work", type=Path, default=REPO / ".bench", help="downloads, corpora, indexes")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    set_prefect_home(args.work)
    results: dict[str, list[dict]] = {}
    for name in [c for c in args.corpora.split(",") if c]:
        if name not in CORPORA or name == "large":
            parser.error(f"unknown corpus {name!r} here (large runs unless --skip-large)")
        results[name] = bench_corpus(name, args.work, modes, full=(name == "medium"), warm=args.warm,
                                     limit_run=not args.skip_embed_only)  # fmt: skip
    if not args.skip_large:
        results["large"] = bench_large(args.work, cold=not args.large_warm)
    out = args.work / "bench-indexing.json"
    merged = json.loads(out.read_text()) if out.exists() else {}
    for name, rows in results.items():  # scenarios not run this time keep their earlier figures
        fresh = {(r["scenario"], r["mode"]) for r in rows}
        merged[name] = [r for r in merged.get(name, []) if (r["scenario"], r["mode"]) not in fresh] + rows
    out.write_text(json.dumps(merged, indent=2))
    print(markdown(results))
    print(f"\nraw figures: {out}")


if __name__ == "__main__":
    main()
