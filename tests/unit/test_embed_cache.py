import numpy as np

from tasks.embed import token_batches
from tasks.embed_cache import EmbeddingCache


def test_cache_roundtrip_and_model_isolation(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", "model-a#1")
    vector = np.arange(4, dtype=np.float32)
    key = cache.key("fn a() {}")
    assert cache.get_many([key]) == {}
    cache.put_many([(key, vector)])
    assert np.array_equal(cache.get_many([key, key])[key], vector)
    other = EmbeddingCache(tmp_path / "c.sqlite", "model-b#2")
    assert other.key("fn a() {}") != key and other.get_many([other.key("fn a() {}")]) == {}
    cache.close()
    reopened = EmbeddingCache(tmp_path / "c.sqlite", "model-a#1")
    assert np.array_equal(reopened.get_many([key])[key], vector)  # persisted


def test_prune_keeps_only_what_this_run_used(tmp_path):
    old = EmbeddingCache(tmp_path / "c.sqlite", "m")
    old.put_many([(old.key(t), np.ones(2, dtype=np.float32)) for t in ("live", "dead")])
    old.close()
    run = EmbeddingCache(tmp_path / "c.sqlite", "m")
    assert set(run.get_many([run.key("live")])) == {run.key("live")}
    run.put_many([(run.key("new"), np.zeros(2, dtype=np.float32))])
    assert run.prune_unused() == 1 and len(run) == 2
    assert run.get_many([run.key("dead")]) == {}


def test_many_keys_are_looked_up_in_chunks(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite", "m")
    items = [(cache.key(str(i)), np.full(3, i, dtype=np.float32)) for i in range(2500)]
    cache.put_many(items)
    found = cache.get_many([key for key, _ in items])
    assert len(found) == 2500 and found[items[1234][0]][0] == 1234


def test_token_batches_sort_by_length_and_respect_the_budget():
    lengths = [250, 10, 12, 240, 11, 100, 256, 9]
    batches = token_batches(lengths, budget=512)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 512 or len(batch) == 1
    assert token_batches([5] * 1000, budget=100_000, max_batch=256)[0].__len__() == 256
