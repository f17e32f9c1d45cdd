"""The embedded store in shards: same answers as one store, one shard in memory, a map that never lies."""

import numpy as np
import pytest

from tasks.qdrant_shards import ShardedStore, ShardMap
from tasks.qdrant_store import QdrantStore
from tests.unit.test_stores import chunk

# Nine files of two chunks each, in a store of 4-point shards: five shards.
FILES = [f"src/m{i}.rs" for i in range(9)]
CHUNKS = [chunk(path, f"f{i}_{j}", f"fn f{i}_{j}() {{}}") for i, path in enumerate(FILES) for j in range(2)]
VECTORS = np.random.default_rng(7).normal(size=(len(CHUNKS), 8)).astype(np.float32)
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)


def open_store(folder, shard_points=4, keep_open=False) -> ShardedStore:
    store = QdrantStore.open(folder, "demo", shard_points=shard_points, keep_shards_open=keep_open)
    store.ensure_collection(8)
    return store


@pytest.fixture()
def sharded(tmp_path):
    store = open_store(tmp_path / "qdrant")
    for start in range(0, len(CHUNKS), 6):  # batches that end in the middle of a shard
        store.upsert(CHUNKS[start : start + 6], VECTORS[start : start + 6])
    yield store
    store.close()


def shard_of_each_file(store: ShardedStore) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for number in store.shard_numbers():
        for record in store._records_in(store._shard(number), with_payload=True, with_vectors=False):
            found.setdefault(record.payload["path"], set()).add(number)
    return found


def test_files_fill_shards_in_order_and_the_map_says_where(sharded, tmp_path):
    assert sharded.shard_numbers() == [0, 1, 2, 3, 4]
    where = shard_of_each_file(sharded)
    assert where == {path: {i // 2} for i, path in enumerate(FILES)}  # a file's chunks share a shard
    assert sharded.map.files == {path: i // 2 for i, path in enumerate(FILES)}
    assert sharded.map.points == [4, 4, 4, 4, 2] and sharded.count() == len(CHUNKS)
    assert sharded.ids() == {c.id for c in CHUNKS}
    assert sharded.shards_in_memory() == 1  # one shard at a time
    saved = ShardMap.load(tmp_path / "qdrant" / "demo" / "shards.json")
    assert saved.files == sharded.map.files and saved.dim == 8


def test_search_across_shards_equals_one_store(sharded, tmp_path):
    single = open_store(tmp_path / "single", shard_points=1_000)
    single.upsert(CHUNKS, VECTORS)
    try:
        for query in VECTORS[[0, 5, 11, 17]]:
            expected = [(hit.id, hit.score) for hit in single.search(query, limit=7)]
            got = [(hit.id, hit.score) for hit in sharded.search(query, limit=7)]
            assert [i for i, _ in got] == [i for i, _ in expected]
            assert np.allclose([s for _, s in got], [s for _, s in expected])
        top = sharded.search(VECTORS[11], limit=1)[0]
        assert top.id == CHUNKS[11].id and top.payload["path"] == "src/m5.rs"
        in_files = sharded.search(VECTORS[11], limit=3, paths=["src/m0.rs", "src/m8.rs"])
        assert {hit.payload["path"] for hit in in_files} <= {"src/m0.rs", "src/m8.rs"} and len(in_files) == 3
        assert sharded.search(VECTORS[11], limit=3, paths=["src/none.rs"]) == []
    finally:
        single.close()


def test_changed_files_move_to_the_last_shard_and_emptied_shards_go(sharded, tmp_path):
    sharded.close()
    store = open_store(tmp_path / "qdrant")  # the map is read back
    try:
        store.delete_files(["src/m0.rs", "src/m1.rs", "src/never.rs"])  # all of shard 0
        assert 0 not in store.shard_numbers() and not (tmp_path / "qdrant" / "demo" / "0000").exists()
        changed = [c for c in CHUNKS if c.rel_path == "src/m1.rs"]
        store.upsert(changed, VECTORS[2:4])
        assert store.map.files["src/m1.rs"] == 4 and store.map.points[4] == 4  # the last shard, now full
        store.upsert([chunk("src/new.rs", "fresh", "fn fresh() {}")], VECTORS[:1])
        assert store.map.files["src/new.rs"] == 5
        assert store.ids() == {c.id for c in CHUNKS if c.rel_path != "src/m0.rs"} | {chunk("src/new.rs", "fresh", "fn fresh() {}").id}
        assert sorted(p.payload["symbol"] for p in store.points_of("src/m1.rs")) == ["demo::f1_0", "demo::f1_1"]
        assert store.points_of("src/m0.rs") == []
    finally:
        store.close()


def test_a_write_that_dies_leaves_a_map_that_finds_its_points(tmp_path, monkeypatch):
    store = open_store(tmp_path / "qdrant")
    store.upsert(CHUNKS[:4], VECTORS[:4])

    def dies(client, chunks, vectors):
        QdrantStore._upsert_into(store, client, chunks[:1], vectors[:1])  # part of the batch is written
        raise OSError("killed")

    monkeypatch.setattr(store, "_upsert_into", dies)
    with pytest.raises(OSError):
        store.upsert(CHUNKS[4:8], VECTORS[4:8])
    store.close()
    store = open_store(tmp_path / "qdrant")  # the next run redoes src/m2.rs and src/m3.rs
    try:
        assert CHUNKS[4].id in store.ids()
        store.delete_files(["src/m2.rs", "src/m3.rs"])
        assert store.ids() == {c.id for c in CHUNKS[:4]}
    finally:
        store.close()


def test_a_long_lived_store_keeps_its_shards_and_one_process_at_a_time(sharded, tmp_path):
    sharded.close()
    kept = open_store(tmp_path / "qdrant", keep_open=True)
    try:
        kept.search(VECTORS[0], limit=3)
        assert kept.shards_in_memory() == 5
        with pytest.raises(RuntimeError, match="in use by another rci process"):
            QdrantStore.open(tmp_path / "qdrant", "demo")
    finally:
        kept.close()
    QdrantStore.open(tmp_path / "qdrant", "demo").close()  # released on close


def test_a_store_of_other_dimensions_is_refused(sharded):
    with pytest.raises(RuntimeError, match="holds 8-dimension vectors but the model makes 384"):
        sharded.ensure_collection(384)
    sharded.delete_collection()
    assert not sharded.exists() and sharded.count() == 0 and sharded.ids() == set()
    assert sharded.search(VECTORS[0]) == sharded.search(VECTORS[0], paths=["src/m0.rs"]) == []


def test_a_batch_that_mixes_shards_puts_each_vector_with_its_chunk(sharded):
    """Rows of a file already in shard 0 around a new file's row (the new file goes to the last
    shard): each shard gets its own rows, with their own vectors."""
    new = chunk("src/new.rs", "fresh", "fn fresh() {}")
    sharded.upsert([CHUNKS[0], new, CHUNKS[1]], VECTORS[[5, 6, 7]])
    vectors = {
        p.payload["symbol"]: np.asarray(p.vector)
        for path in ("src/m0.rs", "src/new.rs")
        for p in sharded.points_of(path, with_vectors=True)
    }
    assert set(vectors) == {"demo::f0_0", "demo::f0_1", "demo::fresh"}
    assert np.allclose(vectors["demo::f0_0"], VECTORS[5]) and np.allclose(vectors["demo::f0_1"], VECTORS[7])
    assert np.allclose(vectors["demo::fresh"], VECTORS[6])
    assert shard_of_each_file(sharded)["src/m0.rs"] == {0} and sharded.map.files["src/new.rs"] == 4
    assert sharded.count() == len(CHUNKS) + 1
