"""Split the evaluation's queries into a tune half and a test half, once, before any tuning.

    .venv/bin/python tests/benchmarks/split_queries.py      # writes "half" into each query set

clap and regex chose the defaults before the split existed, so all their queries are "tune".
Every other crate's queries are split at random: `random.Random(f"{crate}:{SEED}")` picks half
of them (rounded down) for "tune", the rest are "test". A query that already has a half keeps
it, so running this again changes nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

QUERIES = Path(__file__).resolve().parent / "queries"
SEED = 15
TUNED_BEFORE = ("clap", "regex")
RULE = (f"clap and regex: all tune (they chose the defaults before the split); other crates: "
        f"random.Random('<crate>:{SEED}').sample picks half of the queries for tune, the rest are test")  # fmt: skip


def split(crate: str, queries: list[dict]) -> None:
    if all("half" in q for q in queries):
        return
    if crate in TUNED_BEFORE:
        tune = set(range(len(queries)))
    else:
        tune = set(random.Random(f"{crate}:{SEED}").sample(range(len(queries)), len(queries) // 2))
    for i, query in enumerate(queries):
        query["half"] = "tune" if i in tune else "test"


def main() -> None:
    for path in sorted(QUERIES.glob("*.json")):
        if path.name == "test-code.json":  # its own split, said in the file
            continue
        data = json.loads(path.read_text())
        split(data["crate"], data["queries"])
        data["split"] = RULE
        ordered = {key: data[key] for key in ("crate", "package", "split", "queries")}
        path.write_text(json.dumps(ordered, indent=1, ensure_ascii=False) + "\n")
        halves = [q["half"] for q in data["queries"]]
        print(f"{path.name}: {halves.count('tune')} tune, {halves.count('test')} test")


if __name__ == "__main__":
    main()
