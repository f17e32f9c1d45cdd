"""Retrieval metrics over one ranked result list, each expected item counted once.

A result matches an expected item when file and symbol are equal. Two results can match
the same expected item (a struct and its impl share a qualified name; the bytes and str
flavours of an API are separate items): only the first counts, so no metric exceeds 1.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence


def first_hits(ranked: Sequence[Hashable], expected: set) -> list[bool]:
    """For each rank: does this result find an expected item not found higher up?"""
    seen: set = set()
    hits = []
    for key in ranked:
        new = key in expected and key not in seen
        hits.append(new)
        if new:
            seen.add(key)
    return hits


def recall_at(ranked: Sequence[Hashable], expected: set, k: int) -> float:
    return sum(first_hits(ranked[:k], expected)) / len(expected)


def mrr_at(ranked: Sequence[Hashable], expected: set, k: int = 10) -> float:
    for rank, hit in enumerate(first_hits(ranked[:k], expected), start=1):
        if hit:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[Hashable], expected: set, k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(first_hits(ranked[:k], expected), start=1) if hit)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(expected), k) + 1))
    return dcg / ideal


def scores(ranked: Sequence[Hashable], expected: set) -> dict[str, float]:
    return {
        "recall@1": recall_at(ranked, expected, 1),
        "recall@5": recall_at(ranked, expected, 5),
        "recall@10": recall_at(ranked, expected, 10),
        "mrr@10": mrr_at(ranked, expected, 10),
        "ndcg@10": ndcg_at(ranked, expected, 10),
    }


def mean(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]} if rows else {}
