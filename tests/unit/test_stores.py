"""The two stores, real (Tantivy on disk, Qdrant Edge), on hand-made chunks."""

from pathlib import Path

import numpy as np
import pytest

from tasks.chunk import stable_id
from tasks.edge_store import EdgeStore
from tasks.records import Chunk
from tasks.tantivy_store import TantivyStore, identifier_parts


def chunk(path: str, name: str, code: str, doc: str = "", kind: str = "function", owner: str = "") -> Chunk:
    qualified = "::".join(["demo", *([owner] if owner else []), name])
    item = stable_id(path, kind, qualified, 0)
    lines = code.count("\n") + 1
    return Chunk(stable_id(item, 0), item, path, qualified, name, kind, 1, lines, 0, 1, 1, lines, doc,
                 code, code, 10)  # fmt: skip


CHUNKS = [
    chunk("src/io.rs", "read_to_string", "pub fn read_to_string(path: &Path) -> io::Result<String> { todo!() }",
          doc="Reads the entire contents of a file into a string."),  # fmt: skip
    chunk("src/map.rs", "word_counts", "fn word_counts(t: &str) -> HashMap<String, usize> { HashMap::new() }"),
    chunk("src/map.rs", "Cache", "struct Cache { inner: BTreeMap<u64, Vec<u8>> }", kind="struct"),
    chunk("src/net.rs", "retry_upload", "fn retry_upload() { backoff(); }", doc="Retries a failed upload."),
]


@pytest.mark.parametrize(
    "text, parts",
    [
        ("HashMap", ["hash", "map"]),
        ("read_to_string", ["read", "to", "string"]),
        ("HTTPServer", ["http", "server"]),
        ("parse_IOError2", ["parse", "io", "error", "2"]),
        ("std::io::Error", ["std", "io", "error"]),
    ],
)
def test_identifier_parts(text, parts):
    assert identifier_parts(text) == parts


@pytest.fixture()
def tantivy(tmp_path):
    store = TantivyStore(tmp_path / "tantivy")
    store.add(CHUNKS)
    store.commit()
    yield store
    store.close()


def symbols(hits) -> list[str]:
    return [hit.symbol for hit in hits]


def test_tantivy_finds_identifiers_whole_and_by_parts(tantivy):
    assert symbols(tantivy.search("read_to_string"))[0] == "demo::read_to_string"
    assert symbols(tantivy.search("read string"))[0] == "demo::read_to_string"
    assert symbols(tantivy.search("hashmap"))[0] == "demo::word_counts"
    assert symbols(tantivy.search("hash map")) == ["demo::word_counts", "demo::Cache"]  # Cache: BTreeMap's "map"
    assert symbols(tantivy.search("BTreeMap"))[0] == "demo::Cache"
    assert symbols(tantivy.search("tree map"))[0] == "demo::Cache"
    assert symbols(tantivy.search("retrying failed uploads"))[0] == "demo::retry_upload"  # stemmed docs


def test_tantivy_accepts_any_query_text(tantivy):
    for text in ["std::io::Error", "Vec<T>", "fn foo(", "((]]", '"unbalanced', "a AND OR NOT", "*", "+-:^~"]:
        tantivy.search(text)  # never raises
    assert tantivy.search("   ") == [] and tantivy.search("::<>") == []


def test_tantivy_stored_fields_and_kind_filter(tantivy):
    hit = tantivy.search("Cache", kinds=["struct"])[0]
    assert (hit.path, hit.kind, hit.start_line, hit.end_line, hit.name) == ("src/map.rs", "struct", 1, 1, "Cache")
    assert hit.symbol == "demo::Cache"
    assert hit.code == CHUNKS[2].code and hit.id == CHUNKS[2].id
    assert tantivy.search("Cache", kinds=["function"]) == []


def test_tantivy_delete_by_file_and_reopen(tantivy, tmp_path):
    tantivy.delete_files(["src/map.rs"])
    tantivy.commit()
    assert tantivy.chunks_of("src/map.rs") == []
    assert [h.symbol for h in tantivy.chunks_of("src/io.rs")] == ["demo::read_to_string"]
    tantivy.close()
    reopened = TantivyStore.open_existing(tmp_path / "tantivy")
    assert reopened.ids() == {CHUNKS[0].id, CHUNKS[3].id}
    assert symbols(reopened.search("read string"))[0] == "demo::read_to_string"


def test_a_commit_finishes_its_merges_and_frees_the_writer(tmp_path):
    """Tantivy merges 8 segments of one size into one after a commit; commit() waits for it, so
    the index a run leaves is the merged one, and the next writer (another run) can start."""
    import json

    store = TantivyStore(tmp_path / "t")
    for n in range(8):  # one segment per commit
        store.add([chunk(f"src/f{n}.rs", f"item_{n}", f"fn item_{n}() {{}}")])
        store.commit()
    segments = json.loads((tmp_path / "t" / "meta.json").read_text())["segments"]
    assert [s["max_doc"] for s in segments] == [8]
    assert store.count() == 8 and symbols(store.search("item_5"))[0] == "demo::item_5"
    other = TantivyStore(tmp_path / "t")
    other.delete_files(["src/f0.rs"])  # takes the writer: not held by the committed store
    other.commit()
    assert store.count() == 7


def test_a_second_writer_gets_a_clear_error(tantivy, tmp_path):
    tantivy.delete_files(["src/io.rs"])  # holds the writer
    other = TantivyStore(tmp_path / "tantivy")
    with pytest.raises(RuntimeError, match="another process is writing the index"):
        other.add(CHUNKS[:1])


@pytest.fixture()
def edge(tmp_path):
    store = EdgeStore.open(tmp_path / "edge", dim=4)
    store.upsert(CHUNKS, np.eye(4, dtype=np.float32))
    yield store
    store.close()


def test_edge_holds_path_and_kind_with_keyword_indexes(edge):
    assert {p["id"]: (p["path"], p["kind"]) for p in edge.points()} == {
        c.id: (c.rel_path, c.kind) for c in CHUNKS
    }
    schema = edge._shard.info().payload_schema
    assert {field: str(info.data_type) for field, info in schema.items()} == {
        "path": "PayloadSchemaType.Keyword", "kind": "PayloadSchemaType.Keyword",
    }  # fmt: skip
    assert schema["path"].points == len(CHUNKS)


def test_edge_search_with_kind_and_path_filters(edge):
    query = np.array([0, 0, 1, 0], dtype=np.float32)
    hits = edge.search(query, limit=2)
    assert hits[0].id == CHUNKS[2].id and hits[0].score == pytest.approx(1.0)
    assert [h.id for h in edge.search(query, limit=4, kinds=["function"])][:1] != [CHUNKS[2].id]
    assert {h.id for h in edge.search(query, limit=4, kinds=["function"])} == {CHUNKS[0].id, CHUNKS[1].id, CHUNKS[3].id}
    assert [h.id for h in edge.search(query, limit=4, paths=["src/net.rs"])] == [CHUNKS[3].id]
    assert edge.search(query, limit=4, paths=[]) == [] and edge.search(query, limit=4, paths=["src/none.rs"]) == []


def test_edge_delete_by_file_through_the_path_index(edge):
    edge.delete_files(["src/map.rs"])
    assert edge.ids() == {CHUNKS[0].id, CHUNKS[3].id}
    assert edge.points("src/map.rs") == []
    edge.delete_files(["src/io.rs", "src/net.rs", "src/never.rs"])
    assert edge.count() == 0 and edge.ids() == set()


def test_edge_upserting_the_same_ids_replaces_points(edge):
    edge.upsert(CHUNKS[:1], np.ones((1, 4), dtype=np.float32) / 2)
    assert edge.count() == len(CHUNKS)
    assert edge.search(np.ones(4, dtype=np.float32), limit=1)[0].id == CHUNKS[0].id


def test_edge_reopens_with_its_points_and_refuses_another_dimension(edge, tmp_path):
    edge.commit()
    edge.close()
    again = EdgeStore.open(tmp_path / "edge")
    try:
        assert again.ids() == {c.id for c in CHUNKS} and again.dim == 4
    finally:
        again.close()
    with pytest.raises(RuntimeError, match="holds 4-dimension vectors but the model makes 384"):
        EdgeStore.open(tmp_path / "edge", dim=384)


def test_edge_starting_over_empties_the_store(edge, tmp_path):
    edge.close()
    fresh = EdgeStore.open(tmp_path / "edge", dim=4, start_over=True)
    try:
        assert fresh.count() == 0
    finally:
        fresh.close()
    with pytest.raises(FileNotFoundError, match="no vector store"):
        EdgeStore.open(tmp_path / "missing")


def test_edge_writes_survive_a_kill_without_a_flush(tmp_path):
    """The write-ahead log: what was written is there after a SIGKILL, flushed or not."""
    import subprocess
    import sys

    script = f"""
import os, signal, numpy as np
from tasks.edge_store import EdgeStore
from tests.unit.test_stores import CHUNKS
store = EdgeStore.open({str(tmp_path / "edge")!r}, dim=4)
store.upsert(CHUNKS, np.eye(4, dtype=np.float32))
store.delete_files(["src/net.rs"])
os.kill(os.getpid(), signal.SIGKILL)
"""
    subprocess.run([sys.executable, "-c", script], cwd=str(Path(__file__).resolve().parents[2]))
    store = EdgeStore.open(tmp_path / "edge")
    try:
        assert store.ids() == {c.id for c in CHUNKS if c.rel_path != "src/net.rs"}
    finally:
        store.close()


def test_tantivy_own_name_outranks_the_owner_in_the_path(tmp_path):
    """`captures iter` is the method named captures_iter, not every `iter` of a `Captures` type."""
    store = TantivyStore(tmp_path / "t")
    store.add([
        chunk("src/re.rs", "iter", "pub fn iter(&self) -> SubCaptureMatches { todo!() }", doc="An iterator.", owner="Captures"),
        chunk("src/re.rs", "captures_iter", "pub fn captures_iter(&self, t: &str) -> CaptureMatches { todo!() }",
              doc="Returns an iterator over all the non-overlapping capture groups.", owner="Regex"),  # fmt: skip
    ])
    store.commit()
    assert symbols(store.search("captures iter"))[0] == "demo::Regex::captures_iter"
    assert symbols(store.search("Captures iter", limit=2)) == ["demo::Regex::captures_iter", "demo::Captures::iter"]


def test_an_index_of_another_schema_is_refused_unless_the_run_starts_over(tmp_path):
    """An index written by an older version: an update would mix schemas; a rebuild replaces it."""
    import tantivy as tv

    old = tv.SchemaBuilder()
    old.add_text_field("id", stored=True)
    (tmp_path / "t").mkdir()
    tv.Index(old.build(), path=str(tmp_path / "t"))
    with pytest.raises(ValueError, match="schema does not match"):
        TantivyStore(tmp_path / "t")
    store = TantivyStore(tmp_path / "t", starting_over=True)
    store.add(CHUNKS)
    store.commit()
    assert store.count() == len(CHUNKS) and symbols(store.search("read_to_string"))[0] == "demo::read_to_string"
