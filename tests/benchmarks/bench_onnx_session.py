"""The embedder's ONNX Runtime session: fastembed's default against the lean one rci builds.

    .venv/bin/python tests/benchmarks/bench_onnx_session.py                 # tokio (~10 min)
    .venv/bin/python tests/benchmarks/bench_onnx_session.py --crates tokio,cargo

For each crate, every distinct text `rci index` would embed (the real corpus, not a sample) goes
through one model in a fresh process, with all the recommended plan's threads and length-sorted
batches, once with each session, alternating; printed: seconds, tokens per second and the
process's peak RSS (the kernel's high-water mark). tasks/embed.py, `_lean_cpu_session`, says
what the lean session turns off; tasks/recommend.py says which mode uses which.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_indexing import measure_process  # noqa: E402
from tests.benchmarks.corpora import crate_source  # noqa: E402

EMBED = """
import json, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from tasks.chunk import Chunker
from tasks.discover import discover
from tasks.recommend import recommend
from tasks.session import load_embedder
from tasks.settings import load_settings
from tests.benchmarks.corpora import embedded_texts
root = Path({root!r})
found = discover(root, load_settings().max_file_bytes)
plan = recommend(len(found.files), sum(f.size for f in found.files))
model = load_embedder(load_settings(), threads=plan.embed_threads * plan.workers, lean={session!r} == "lean")
texts = embedded_texts(root, Chunker(model.tokenizer(), min(256, model.max_tokens), 2))
started = time.perf_counter()
model.embed(list(texts), list(texts.values()))
print(json.dumps({{"texts": len(texts), "tokens": sum(texts.values()), "seconds": time.perf_counter() - started}}))
"""


def embed_corpus(root: Path, session: str) -> dict:
    env = {**os.environ, "RCI_DATA_DIR": str(REPO / ".bench" / "session-bench")}
    out, _, peak = measure_process([sys.executable, "-c", EMBED.format(repo=str(REPO), root=str(root), session=session)], env)
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crates", default="tokio")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both sessions")
    args = parser.parse_args()
    print("| crate | session | texts | tokens | seconds | tokens/s | peak RSS MB |\n| --- | --- | --- | --- | --- | --- | --- |")
    for crate in args.crates.split(","):
        root = crate_source(crate, REPO / ".bench")
        for _ in range(args.rounds):
            for session in ("lean", "default"):
                r = embed_corpus(root, session)
                print(f"| {crate} | {session} | {r['texts']:,} | {r['tokens']:,} | {r['seconds']:.1f} | "
                      f"{r['tokens'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
