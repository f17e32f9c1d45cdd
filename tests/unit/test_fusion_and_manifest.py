import pytest

from tasks.commit import Manifest, incompatibility, load_manifest, save_manifest
from tasks.search import (
    Searcher, _Hit, asks_for_tests, fusion_k, is_test_code, names_in, query_shape, reciprocal_rank_fusion,
)
from tasks.settings import Settings


def test_rrf_hand_computed():
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert sorted(scores, key=scores.get, reverse=True) == ["a", "c", "b"]


def test_rrf_counts_a_key_once_per_ranking():
    assert reciprocal_rank_fusion([["a", "a", "b"]], k=0) == {"a": 1.0, "b": 0.5}


def test_rrf_weights_scale_each_ranking():
    scores = reciprocal_rank_fusion([["a", "b"], ["b"]], k=0, weights=[2.0, 1.0])
    assert scores == {"a": 2.0, "b": 1.0 + 1.0}


@pytest.mark.parametrize(
    "query, shape",
    [
        ("replace_all", "identifier"),
        ("captures iter", "identifier"),
        ("CaptureLocations get", "identifier"),
        ("Regex::new compile a pattern or get an error", "mixed"),
        ("par_windows overlapping slices of a slice", "mixed"),
        ("make an option mandatory unless another option was supplied", "sentence"),
    ],
)
def test_query_shapes(query, shape):
    assert query_shape(query) == shape


def hit(item: str, window: int = 0, kind: str = "function", path: str = "src/lib.rs", symbol: str = "") -> _Hit:
    return _Hit(f"{item}#{window}", item, path, symbol or f"demo::{item}", kind, 1, 9, f"fn {item}() {{}}")


def fusing(rankings, k=10, query="parse") -> list[tuple[str, float]]:
    """Searcher._merge on hand-made rankings (no stores: the point is the arithmetic)."""
    searcher = Searcher.__new__(Searcher)
    searcher.kind_prior, searcher.test_prior = {"impl": 0.5, "module": 0.5}, 0.5
    searcher._stale = lambda paths: set()
    weights = [1.0] * len(rankings)
    merged = searcher._merge(rankings, k, limit=10, weights=weights, query=query)
    return [(r.symbol, r.score) for r in merged]  # scores rounded to 6 places


def test_fusion_counts_an_item_once_per_engine_at_its_best_window():
    bm25 = [hit("long", 0), hit("long", 1), hit("short")]
    vector = [hit("long", 2), hit("short")]
    assert fusing([bm25, vector]) == [
        ("demo::long", pytest.approx(1 / 11 + 1 / 11, abs=1e-6)),  # both engines, different windows: summed
        ("demo::short", pytest.approx(1 / 12 + 1 / 12, abs=1e-6)),  # rank 2, not 3: long's second window is no rank
    ]


def test_fusion_ranks_containers_and_tests_below_members():
    ranking = [hit("Parser", kind="impl"), hit("tests", kind="module"),
               hit("checks_it", path="src/lib.rs", symbol="demo::tests::checks_it"), hit("parse")]  # fmt: skip
    assert fusing([ranking]) == [
        ("demo::parse", pytest.approx(1 / 14, abs=1e-6)),
        ("demo::Parser", pytest.approx(0.5 / 11, abs=1e-6)),
        ("demo::tests", pytest.approx(0.5 / 12, abs=1e-6)),
        ("demo::tests::checks_it", pytest.approx(0.5 / 13, abs=1e-6)),
    ]


def test_tests_keep_their_rank_when_the_query_asks_for_tests():
    ranking = [hit("checks_retry", symbol="demo::tests::checks_retry"), hit("retry")]
    assert [symbol for symbol, _ in fusing([ranking], query="tests for retry")] == ["demo::tests::checks_retry", "demo::retry"]
    assert [symbol for symbol, _ in fusing([ranking], query="retry")] == ["demo::retry", "demo::tests::checks_retry"]


def test_a_test_named_by_the_query_keeps_its_rank_unless_code_shares_the_name():
    ranking = [hit("zero_slot", symbol="demo::tests::zero_slot"), hit("Counter", kind="struct")]
    assert fusing([ranking], query="zero_slot")[0][0] == "demo::tests::zero_slot"
    assert fusing([ranking], query="zero_slot counts")[0][0] == "demo::tests::zero_slot"
    assert fusing([ranking], query="count zero slots")[0][0] == "demo::Counter"
    shared = [hit("t_iter", symbol="demo::tests::captures_iter"), hit("captures_iter", symbol="demo::Regex::captures_iter")]
    assert fusing([shared], query="captures_iter")[0][0] == "demo::Regex::captures_iter"


@pytest.mark.parametrize(
    "query, engine, k",
    [
        ("captures_iter", "hybrid", 10),  # a name: each engine's first ranks count more
        ("LitInt base10", "hybrid", 10),
        ("retry a failed upload", "hybrid", 30),
        ("how does Regex::captures_iter work", "hybrid", 30),
        ("captures_iter", "bm25", 30),  # one engine: k only scales the priors
        ("captures_iter", "vector", 30),
    ],
)
def test_fusion_k_by_query_shape(query, engine, k):
    assert fusion_k(query, engine, Settings()) == k
    assert fusion_k(query, engine, Settings(search_rrf_k=40, search_rrf_k_identifier=5)) == (5 if k == 10 else 40)


def test_a_lower_k_keeps_one_engine_s_first_result_first():
    """BM25 ranks the name's item first and the vectors 12th; another item is 5th in both."""
    bm25 = [hit("named"), *[hit(f"b{i}") for i in range(3)], hit("both")]
    vector = [*[hit(f"v{i}") for i in range(4)], hit("both"), *[hit(f"v{i}") for i in range(4, 10)], hit("named")]
    assert fusing([bm25, vector], k=30)[0][0] == "demo::both"
    assert fusing([bm25, vector], k=10)[0][0] == "demo::named"


@pytest.mark.parametrize(
    "query, names",
    [
        ("counter_zero_slot", {"counter_zero_slot"}),
        ("LitInt base10", {"litint", "base10"}),
        ("how does Regex::captures_iter work", {"captures_iter"}),
        ("retry a failed upload", set()),
    ],
)
def test_the_names_a_query_gives(query, names):
    assert names_in(query) == names


@pytest.mark.parametrize(
    "query, asks",
    [
        ("the test that checks a timeout fires", True),
        ("Tests for retry backoff", True),
        ("testing helpers for parsers", True),
        ("retry a failed upload", False),
        ("test_parse_negative", True),  # a test's name
        ("parse_tests helper", True),
        ("run_test_case", True),
        ("test whether the pattern matches", False),  # the verb: a description of checking
        ("latest attested contest", False),
        ("contest entries", False),
    ],
)
def test_which_queries_ask_for_tests(query, asks):
    assert asks_for_tests(query) is asks


@pytest.mark.parametrize(
    "path, symbol, test",
    [
        ("tests/cli.rs", "cli::parses", True),
        ("benches/speed.rs", "speed::bench_find", True),
        ("src/parser/tests/mod.rs", "demo::parser::tests", True),
        ("src/lib.rs", "demo::test::from_range", True),
        ("src/lib.rs", "demo::tests", False),  # the module item itself: a container, not a test
        ("src/testing.rs", "demo::testing::assert_parses", False),
        ("src/lib.rs", "demo::Tester::test", False),
    ],
)
def test_what_counts_as_test_code(path, symbol, test):
    assert is_test_code(path, symbol) is test


def manifest(**changes) -> Manifest:
    base = dict(root="/x", codebase_id="x-1", schema_version=1, chunker_version=1, model_name="m", model_id="m#1",
                model_dim=384, model_source="package", qdrant="embedded")  # fmt: skip
    return Manifest(**{**base, **changes})


def test_manifest_roundtrip(tmp_path):
    path = tmp_path / "manifest.json"
    save_manifest(path, manifest(last_run={"mode": "sequential"}))
    loaded = load_manifest(path)
    assert loaded.model_id == "m#1" and loaded.last_run == {"mode": "sequential"} and loaded.updated_at


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model_id": "other#2", "model_name": "other"}, "built with model m"),
        ({"model_dim": 768}, "built with model m"),
        ({"chunker_version": 2}, "older version"),
        ({"qdrant": "http://q:6333"}, "Qdrant embedded"),
    ],
)
def test_incompatible_indexes_are_explained(change, words):
    assert words in incompatibility(manifest(), manifest(**change))
    assert incompatibility(manifest(), manifest()) is None
