"""What an agent waits for: tool calls to `rci mcp` over a real stdio session, timed at the client.

    .venv/bin/python tests/benchmarks/bench_mcp.py                 # the medium corpus's index (~2 min)
    .venv/bin/python tests/benchmarks/bench_mcp.py --corpus large

Uses the index bench_indexing.py leaves. One session: a first search (the server opens the
code base), then 50 searches (the evaluation's first 50 queries), 20 find_definition and 20
read_item calls; p50 and p95 of each, and the first call alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.benchmarks.bench_search import INDEXES, percentile  # noqa: E402
from tests.benchmarks.search_quality import CRATES, load  # noqa: E402

NAMES = ["Command", "get_matches", "Regex", "is_match", "ArgMatches", "find_iter", "Captures", "value_of",
         "try_get_matches", "RegexBuilder", "Arg", "replace_all", "split", "ArgGroup", "shortest_match",
         "Parser", "Error", "new", "build", "as_str"]  # fmt: skip


async def measure(tree: Path, data: Path) -> dict:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCI_", "PREFECT_API_URL"))}
    env["RCI_DATA_DIR"] = str(data)
    params = StdioServerParameters(command=str(Path(sys.executable).parent / "rci"), args=["mcp"], env=env)
    texts = [q["query"] for crate in CRATES for q in load(crate)][:50]
    figures: dict = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as client:
            await client.initialize()

            async def timed(tool: str, **arguments) -> float:
                started = time.perf_counter()
                result = await client.call_tool(tool, {"directory": str(tree), **arguments})
                elapsed = (time.perf_counter() - started) * 1000
                assert not result.is_error, result.content[0].text
                return elapsed

            figures["first_search_ms"] = round(await timed("search", query="parse command line arguments"), 1)
            for label, tool, calls in (
                ("search", "search", [{"query": t} for t in texts]),
                ("find_definition", "find_definition", [{"symbol": n} for n in NAMES]),
                ("read_item", "read_item", [{"symbol": n} for n in NAMES]),
            ):
                times = [await timed(tool, **arguments) for arguments in calls]
                figures[f"{label}_p50_ms"] = round(statistics.median(times), 1)
                figures[f"{label}_p95_ms"] = round(percentile(times, 0.95), 1)
                figures[f"{label}_calls"] = len(times)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="medium", choices=sorted(INDEXES))
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    args = parser.parse_args()
    tree, data = (args.work / part for part in INDEXES[args.corpus])
    if not (tree.is_dir() and data.is_dir()):
        sys.exit(f"no index of the {args.corpus} corpus under {args.work}: run bench_indexing.py first")
    figures = anyio.run(measure, tree, data)
    print(json.dumps({args.corpus: figures}, indent=2))
    out = args.work / "bench-mcp.json"
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged[args.corpus] = figures
    out.write_text(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()
