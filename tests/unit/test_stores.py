"""The two stores, real (Tantivy on disk, embedded Qdrant), on hand-made chunks."""

import numpy as np
import pytest

from tasks.chunk import stable_id
from tasks.qdrant_store import QdrantStore, remove_embedded_store
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
def qdrant(tmp_path):
    store = QdrantStore.open(tmp_path / "qdrant", "demo-collection")
    store.ensure_collection(4)
    vectors = np.eye(4, dtype=np.float32)
    store.upsert(CHUNKS, vectors)
    yield store
    store.close()


def test_qdrant_structured_payload_and_search(qdrant):
    hits = qdrant.search(np.array([0, 0, 1, 0], dtype=np.float32), limit=2)
    assert hits[0].id == CHUNKS[2].id and hits[0].score == pytest.approx(1.0)
    payload = hits[0].payload
    assert payload["path"] == "src/map.rs" and payload["symbol"] == "demo::Cache" and payload["kind"] == "struct"
    assert payload["text"] == CHUNKS[2].code and (payload["start_line"], payload["end_line"]) == (1, 1)
    assert qdrant.search(np.array([0, 0, 1, 0], dtype=np.float32), kinds=["function"])[0].id != CHUNKS[2].id


def test_qdrant_delete_by_file_through_the_path_field(qdrant):
    qdrant.delete_files(["src/map.rs"])
    assert qdrant.ids() == {CHUNKS[0].id, CHUNKS[3].id}
    assert qdrant.points_of("src/map.rs") == []
    assert [p.payload["symbol"] for p in qdrant.points_of("src/io.rs")] == ["demo::read_to_string"]
    qdrant.delete_files(["src/io.rs", "src/net.rs", "src/never.rs"])
    assert qdrant.count() == 0


def test_qdrant_rejects_a_model_of_another_size(qdrant):
    with pytest.raises(RuntimeError, match="holds 4-dimension vectors but the model makes 384"):
        qdrant.ensure_collection(384)


def test_qdrant_upserting_the_same_ids_replaces_points(qdrant):
    qdrant.upsert(CHUNKS[:1], np.ones((1, 4), dtype=np.float32) / 2)
    assert qdrant.count() == len(CHUNKS)


def test_a_large_embedded_store_advises_a_server(qdrant):
    assert qdrant.size_note(20_000) is None
    note = qdrant.size_note(31_270)
    assert "31,270 points" in note and "each search loads them all, 2,500 at a time" in note and "RCI_QDRANT_URL" in note
    on_server = QdrantStore(qdrant.client, qdrant.collection, embedded=False)
    assert on_server.size_note(1_000_000) is None


def test_a_run_that_starts_over_empties_the_embedded_store_without_opening_it(tmp_path):
    store = QdrantStore.open(tmp_path / "qdrant", "demo-collection")
    store.ensure_collection(4)
    store.upsert(CHUNKS, np.eye(4, dtype=np.float32))
    forgotten = []
    with pytest.raises(RuntimeError, match="in use by another rci process"):
        remove_embedded_store(tmp_path / "qdrant", first=lambda: forgotten.append(True))  # open here
    assert store.count() == len(CHUNKS) and forgotten == []  # its points and the last commit stay
    store.close()
    remove_embedded_store(tmp_path / "qdrant", first=lambda: forgotten.append(True))
    assert forgotten == [True]
    reopened = QdrantStore.open(tmp_path / "qdrant", "demo-collection")
    try:
        assert not reopened.exists() and reopened.count() == 0
    finally:
        reopened.close()
    remove_embedded_store(tmp_path / "never-created")  # nothing to remove is fine


def test_qdrant_selective_filter_finds_what_lies_beyond_the_candidate_list(tmp_path):
    """The embedded store filters a candidate list first; a rare path must still be found."""
    store = QdrantStore.open(tmp_path / "qdrant", "many")
    store.ensure_collection(4)
    crowd = [chunk(f"src/crowd{i}.rs", f"near_{i}", f"fn near_{i}() {{}}") for i in range(450)]
    rare = chunk("src/rare.rs", "far_away", "fn far_away() {}")
    vectors = np.vstack([np.tile([1, 0, 0, 0], (450, 1)), [[0, 1, 0, 0]]]).astype(np.float32)
    store.upsert([*crowd, rare], vectors)
    query = np.array([1, 0, 0, 0], dtype=np.float32)
    try:
        assert rare.id not in {hit.id for hit in store.search(query, limit=400)}  # beyond the candidates
        found = store.search(query, limit=5, paths=["src/rare.rs"])
        assert [hit.payload["symbol"] for hit in found] == ["demo::far_away"]
        kinds = store.search(query, limit=3, kinds=["function"], paths=["src/crowd7.rs", "src/rare.rs"])
        assert [hit.payload["path"] for hit in kinds] == ["src/crowd7.rs", "src/rare.rs"]
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
