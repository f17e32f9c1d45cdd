"""The items the index will hold for one pinned crate, as a query writer names them.

    .venv/bin/python tests/benchmarks/list_items.py cargo            # every item: file:line kind symbol
    .venv/bin/python tests/benchmarks/list_items.py cargo --path src/cargo/core/resolver

Parses with the indexer's own parser (no model, no index, no search), so a query set can name
its expected items by `file` and `symbol` exactly as search results will, before anyone has
looked at a search result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tasks.discover import discover  # noqa: E402
from tasks.parse import module_path, parse_file  # noqa: E402
from tasks.prepare import read_source  # noqa: E402
from tasks.settings import load_settings  # noqa: E402
from tests.benchmarks.corpora import PACKAGES, crate_source  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crate", choices=sorted(PACKAGES))
    parser.add_argument("--path", default="", help="only files under this folder")
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    args = parser.parse_args()
    root = crate_source(args.crate, args.work)
    print(f"# {args.crate} at {root}", flush=True)
    for source in discover(root, load_settings().max_file_bytes).files:
        if not source.rel_path.startswith(args.path):
            continue
        data, _ = read_source(source)
        if data is None:
            continue
        for item in parse_file(source.rel_path, data, module_path(root, source.rel_path)).items:
            print(f"{source.rel_path}:{item.start_line}-{item.end_line}  {item.kind}  {item.qualified_name}")


if __name__ == "__main__":
    main()
