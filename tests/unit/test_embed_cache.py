import numpy as np

from tasks.embed import token_batches
from tasks.embed_cache import EmbeddingCache


def read(cache: EmbeddingCache, keys: list[bytes], dim: int) -> tuple[list[bool], np.ndarray]:
    out = np.full((len(keys), dim), -1.0, dtype=np.float32)
    found = cache.read_into(keys, out)
    return found.tolist(), out


def test_cache_roundtrip_and_model_isolation(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", "model-a#1")
    vector = np.arange(4, dtype=np.float32)
    key, other_text = cache.key("fn a() {}"), cache.key("fn b() {}")
    assert read(cache, [key], 4)[0] == [False]
    cache.put_many([(key, vector)])
    found, out = read(cache, [key, other_text, key], 4)  # a repeated key fills every row it is in
    assert found == [True, False, True]
    assert np.array_equal(out[0], vector) and np.array_equal(out[2], vector) and (out[1] == -1).all()
    other = EmbeddingCache(tmp_path / "c.sqlite", "model-b#2")
    assert other.key("fn a() {}") != key and read(other, [other.key("fn a() {}")], 4)[0] == [False]
    cache.close()
    reopened = EmbeddingCache(tmp_path / "c.sqlite", "model-a#1")
    assert np.array_equal(read(reopened, [key], 4)[1][0], vector)  # persisted


def test_prune_keeps_only_what_this_run_used(tmp_path):
    old = EmbeddingCache(tmp_path / "c.sqlite", "m")
    old.put_many([(old.key(t), np.ones(2, dtype=np.float32)) for t in ("live", "dead")])
    old.close()
    run = EmbeddingCache(tmp_path / "c.sqlite", "m")
    assert run.known([run.key("live"), run.key("other"), run.key("live")]).tolist() == [True, False, True]
    run.put_many([(run.key("new"), np.zeros(2, dtype=np.float32))])
    read(run, [run.key("dead")], 2)  # reading a vector (the writer) is not using the text
    assert run.prune_unused() == 1 and len(run) == 2
    assert read(run, [run.key("dead"), run.key("live"), run.key("new")], 2)[0] == [False, True, True]


def test_many_keys_are_looked_up_in_chunks(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", "m")
    items = [(cache.key(str(i)), np.full(3, i, dtype=np.float32)) for i in range(2500)]
    cache.put_many(items)
    found, out = read(cache, [key for key, _ in items], 3)
    assert all(found) and (out[:, 0] == np.arange(2500)).all()


def test_token_batches_sort_by_length_and_respect_the_budget():
    lengths = [250, 10, 12, 240, 11, 100, 256, 9]
    batches = token_batches(lengths, budget=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 512 or len(batch) == 1
    assert token_batches([5] * 1000, budget=100_000, max_batch=256)[0].__len__() == 256
