import math

import pytest

from tests.benchmarks.metrics import mrr_at, ndcg_at, recall_at, scores


def test_hand_computed_example_with_duplicate_hits():
    # Expected: A and B. The engine returns A twice (a struct and its impl share a name), then
    # an irrelevant X, then B. Counted once each, A at rank 1 and B at rank 4.
    ranked = ["A", "A", "X", "B", "A"]
    expected = {"A", "B"}
    assert recall_at(ranked, expected, 1) == 0.5
    assert recall_at(ranked, expected, 3) == 0.5  # the duplicate A adds nothing
    assert recall_at(ranked, expected, 5) == 1.0
    assert mrr_at(ranked, expected) == 1.0
    dcg = 1 / math.log2(2) + 1 / math.log2(5)
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, expected) == pytest.approx(dcg / ideal)  # 0.8597, not above 1


def test_no_metric_exceeds_one_even_when_every_result_repeats_an_expected_item():
    ranked = ["A"] * 10
    for value in scores(ranked, {"A"}).values():
        assert value == 1.0
    for value in scores(["A", "B"] * 5, {"A", "B"}).values():
        assert 0.0 <= value <= 1.0


def test_misses_and_late_hits():
    assert scores(["X", "Y"], {"A"}) == {"recall@1": 0, "recall@5": 0, "recall@10": 0, "mrr@10": 0, "ndcg@10": 0}
    late = ["X"] * 9 + ["A"]
    assert mrr_at(late, {"A"}) == 0.1 and recall_at(late, {"A"}, 5) == 0
    assert mrr_at(["X"] * 10 + ["A"], {"A"}) == 0.0  # beyond the cut-off
