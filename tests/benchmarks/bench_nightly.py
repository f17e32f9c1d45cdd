"""The nightly reindex over a process work pool: one index worker against two, side by side in one run.

    .venv/bin/python tests/benchmarks/bench_nightly.py                          # 4 copies of the demo crate
    .venv/bin/python tests/benchmarks/bench_nightly.py --crates regex nom serde rayon   # Debian crates

For each worker count, in turn: a fresh data root (a cold index of every code base), the pool
and deployments of deployments/prefect.yaml, the workers (tests/integration/fleet.py, as the
README sets them up), then one run of the nightly deployment. Prints its wall time (start to
end, as the server recorded them) and, per code base, the worker that ran it, when it started
after the nightly run and how long it took. No other work on the machine while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from flows.temporary_server import temporary_prefect_server  # noqa: E402
from tests.benchmarks.corpora import crate_source  # noqa: E402
from tests.conftest import build_demo_crate  # noqa: E402
from tests.integration.fleet import work_pool  # noqa: E402
from tests.integration.helpers import children_of, start_deployment, wait_for  # noqa: E402

os.environ.pop("PREFECT_API_URL", None)  # a temporary server of its own: not the user's, nor the tests'


def nightly(codebases: list[Path], workers: int, scratch: Path) -> dict:
    scratch.mkdir(parents=True)
    env = {
        **os.environ,
        "RCI_DATA_DIR": str(scratch / "data"),
        "RCI_CODEBASES": json.dumps([str(c) for c in codebases]),
        "RCI_ALLOWED_ROOTS": json.dumps([str(c) for c in codebases]),
    }
    with work_pool(env, index_workers=workers, logs=scratch):
        run = wait_for(start_deployment("nightly-reindex", {}), timeout=7200)
    assert run.state.type.value == "COMPLETED", run.state.message
    children = sorted(children_of(run.id), key=lambda child: child.start_time)
    return {
        "workers": workers,
        "wall_s": round((run.end_time - run.start_time).total_seconds(), 1),
        "runs": [
            {"code base": "/".join(Path(c.parameters["directory"]).parts[-2:]), "worker": c.labels.get("prefect.worker.name"),
             "started_after_s": round((c.start_time - run.start_time).total_seconds(), 1),
             "seconds": round((c.end_time - c.start_time).total_seconds(), 1)}
            for c in children
        ],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crates", nargs="*", default=[], help="Debian crates (tests/benchmarks/corpora.py)")
    parser.add_argument("--work", type=Path, default=REPO / ".bench", help="downloads")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="index worker counts to compare")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="rci-bench-nightly-"))
    if args.crates:
        codebases = [crate_source(crate, args.work) for crate in args.crates]
    else:
        codebases = [build_demo_crate(scratch / "src" / f"crate-{n}") for n in range(1, 5)]
    with temporary_prefect_server():
        results = [nightly(codebases, workers, scratch / f"workers-{workers}") for workers in args.workers]
    for result in results:
        print(f"{result['workers']} index worker(s): nightly wall {result['wall_s']:.1f} s")
        for row in result["runs"]:
            print(f"    {row["code base"]:<28} {row['worker']:<16} started +{row['started_after_s']:>6.1f} s"
                  f"  ran {row['seconds']:>6.1f} s")  # fmt: skip
    if len(results) == 2:
        print(f"ratio {results[1]['workers']} workers / {results[0]['workers']}: "
              f"{results[1]['wall_s'] / results[0]['wall_s']:.2f}x the wall time")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
