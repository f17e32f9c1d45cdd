"""Search on the demo crate's real index: engines, windows merged into items, filters, stale results."""

import json
import os
import time

import pytest

from flows.index import index_codebase
from tasks.search import Searcher, SearchError
from tests.conftest import rci

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture()
def searcher(demo_crate, data_dir):
    index_codebase(directory=str(demo_crate))
    opened = Searcher(demo_crate)
    yield opened
    opened.close()


def symbols(results):
    return [r.symbol for r in results]


def test_each_engine_finds_its_kind_of_query(searcher):
    # BM25: an exact identifier from the body.
    assert symbols(searcher.search("or_insert", engine="bm25"))[0] == "demo_tensor::net::word_frequencies"
    # Vectors: a description that shares few words with the code.
    assert "demo_tensor::net::retry_failed_upload" in symbols(
        searcher.search("send it to the server again when it did not work", engine="vector", limit=3)
    )
    hybrid = searcher.search("count how often words appear", limit=3)
    assert hybrid[0].symbol == "demo_tensor::net::word_frequencies"
    assert all(r.score > 0 for r in hybrid) and hybrid == sorted(hybrid, key=lambda r: -r.score)
    with pytest.raises(SearchError, match="unknown engine 'fuzzy'"):
        searcher.search("x", engine="fuzzy")


def test_windows_of_one_item_come_back_as_the_whole_item(searcher, demo_crate):
    results = searcher.search("opcode name halt_and_catch_fire nop load store", limit=10)
    opcode = [r for r in results if r.symbol == "demo_tensor::long::opcode_name"]
    lines = len((demo_crate / "src" / "long.rs").read_text().splitlines())
    assert len(opcode) == 1  # three windows, one result
    assert (opcode[0].start_line, opcode[0].end_line) == (1, lines)


def test_kind_and_path_filters(searcher):
    methods = searcher.search("tensor", kinds=["method"], limit=20)
    assert methods and {r.kind for r in methods} == {"method"}
    in_net = searcher.search("tensor upload", path="src/net.rs", limit=20)
    assert in_net and {r.file for r in in_net} == {"src/net.rs"}
    under_src = searcher.search("shape", path="src/*.rs", limit=20)
    assert under_src and all(r.file.startswith("src/") for r in under_src)
    assert searcher.search("shape", path="no/such/dir") == []
    for engine in ("bm25", "vector"):
        assert {r.kind for r in searcher.search("tensor", kinds=["struct", "enum"], engine=engine)} <= {"struct", "enum"}


def test_results_from_files_changed_since_indexing_are_stale(searcher, demo_crate):
    assert not any(r.stale for r in searcher.search("retry upload"))
    net = demo_crate / "src" / "net.rs"
    net.write_text(net.read_text() + "\n// edited\n")
    os.utime(net, ns=(time.time_ns(), time.time_ns()))
    results = searcher.search("retry upload")
    assert {r.file for r in results if r.stale} == {"src/net.rs"}
    assert all(not r.stale for r in results if r.file != "src/net.rs")


@pytest.mark.parametrize("query", ["std::io::Error", "Vec<T>", "fn foo(", "((]]", '"unclosed', "a OR AND NOT", "*", "🦀"])
def test_any_query_text_is_accepted(searcher, query):
    assert isinstance(searcher.search(query), list)


def test_empty_query_is_a_clear_error(searcher):
    with pytest.raises(SearchError, match="the query is empty"):
        searcher.search("   ")


def test_cli_search_options_and_json(demo_crate, data_dir):
    assert rci("index", str(demo_crate)).returncode == 0
    out = rci("search", str(demo_crate), "tensor", "--engine", "bm25", "--kind", "method,function",
              "--path", "src/lib.rs", "--json", "-n", "5")  # fmt: skip
    results = json.loads(out.stdout)
    assert results and all(r["file"] == "src/lib.rs" and r["kind"] in ("method", "function") for r in results)
    assert set(results[0]) == {"file", "start_line", "end_line", "symbol", "kind", "score", "snippet", "stale"}
    bad = rci("search", str(demo_crate), "tensor", "--engine", "fuzzy")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: unknown engine 'fuzzy'; use hybrid, bm25, vector"


def test_an_index_the_search_cannot_read_says_how_to_rebuild_it(searcher, demo_crate):
    manifest_path = searcher.layout.manifest_path
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "schema_version": manifest["schema_version"] - 1}))
    with pytest.raises(SearchError, match=r"built by an older version .*rci index .*--force"):
        Searcher(demo_crate)
    manifest_path.write_text(json.dumps({**manifest, "qdrant": "http://qdrant.example:6333"}))
    with pytest.raises(SearchError, match=r"vectors are in Qdrant http://qdrant.example:6333.*--force"):
        Searcher(demo_crate)
