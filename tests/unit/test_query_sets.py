"""The evaluation's query sets: their shape, their halves, and the crates kept out of them."""

import copy
import json
import random
from pathlib import Path

from tasks.search import is_test_code
from tests.benchmarks import split_queries
from tests.benchmarks.corpora import PACKAGES
from tests.benchmarks.search_quality import EVALUATED

QUERIES = Path(__file__).resolve().parents[1] / "benchmarks" / "queries"


FOR_TESTS = QUERIES / "test-code.json"  # answers that are tests, a set of its own (search_quality.tests_tables)


def query_sets() -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(QUERIES.glob("*.json")) if path != FOR_TESTS}


def test_every_set_is_evaluated_and_none_is_of_a_reserved_crate():
    sets = query_sets()
    assert set(sets) == set(EVALUATED)
    assert not {"tokio", "itertools"} & set(sets)  # reserved for independent checks
    for crate, data in sets.items():
        assert data["crate"] == crate and data["package"] == f"librust-{crate}-dev={PACKAGES[crate]}"


def test_queries_are_well_formed_and_the_mix_holds():
    queries = [q for data in query_sets().values() for q in data["queries"]]
    assert len(queries) >= 250
    texts = [q["query"].strip().lower() for q in queries]
    assert len(set(texts)) == len(texts)
    kinds = [q["type"] for q in queries]
    assert set(kinds) == {"description", "identifier", "mixed"}
    assert kinds.count("description") >= len(kinds) / 2 and kinds.count("identifier") >= len(kinds) / 4
    for q in queries:
        assert q["expect"] and all(set(e) == {"file", "symbol"} for e in q["expect"]), q


def test_the_split_was_made_once_and_is_reproducible():
    for crate, data in query_sets().items():
        assert data["split"] == split_queries.RULE
        halves = [q["half"] for q in data["queries"]]
        if crate in split_queries.TUNED_BEFORE:
            assert set(halves) == {"tune"}
        else:
            assert halves.count("tune") == len(halves) // 2
        fresh = copy.deepcopy(data["queries"])
        for q in fresh:
            del q["half"]
        split_queries.split(crate, fresh)
        assert [q["half"] for q in fresh] == halves


def test_the_queries_for_tests_answer_with_tests_and_keep_their_split():
    data = json.loads(FOR_TESTS.read_text())
    queries = data["queries"]
    assert {q["crate"] for q in queries} <= set(EVALUATED) and data["split"].startswith("random.Random('test-code:<crate>')")
    assert all(is_test_code(e["file"], e["symbol"]) for q in queries for e in q["expect"])
    evaluated = {q["query"].strip().lower() for d in query_sets().values() for q in d["queries"]}
    assert not evaluated & {q["query"].strip().lower() for q in queries}
    for crate in {q["crate"] for q in queries}:
        mine = [q for q in queries if q["crate"] == crate]
        tune = set(random.Random(f"test-code:{crate}").sample(range(len(mine)), len(mine) // 2))
        assert [q["half"] for q in mine] == ["tune" if i in tune else "test" for i in range(len(mine))]
