import pytest

from tasks.recommend import GIB, Machine, choose_mode, recommend


@pytest.mark.parametrize(
    "files, cores, free_gib, mode",
    [
        (1000, 2, 0.5, "sequential"),  # little memory
        (5, 8, 16, "sequential"),  # nothing to overlap
        (8, 2, 16, "sequential"),
        (9, 2, 16, "parallel"),
        (500, 4, 16, "parallel"),  # moderate size, memory to spare: one model per core
        (1999, 16, 64, "parallel"),
        (2000, 16, 64, "pipeline"),  # large: bounded memory
        (1000, 2, 3.5, "pipeline"),  # tight memory: one model, bounded batches
    ],
)
def test_the_documented_table(files, cores, free_gib, mode):
    chosen, reason = choose_mode(files, Machine(cores, int(free_gib * GIB)))
    assert chosen == mode and reason


def test_plan_sizes_follow_the_machine():
    small = recommend(40, machine=Machine(2, 16 * GIB))
    assert small.mode == "parallel" and small.file_batch_size == 8 and small.workers == 2 and small.embed_threads == 1
    piped = recommend(40, machine=Machine(2, 3 * GIB))
    assert piped.mode == "pipeline" and piped.workers == 1 and piped.embed_threads == 2
    big = recommend(5000, 200 * 1024 * 1024, machine=Machine(16, 64 * GIB))
    assert big.file_batch_size == 128 and big.max_in_flight == 3 and big.qdrant_batch == 512
    parallel = recommend(800, machine=Machine(8, 32 * GIB))
    assert parallel.mode == "parallel" and parallel.workers == 8 and parallel.embed_threads == 1
    assert parallel.parse_processes == 4
    tight = recommend(800, 50 * 1024 * 1024, machine=Machine(2, int(1.2 * GIB)))
    assert tight.tantivy_heap_bytes <= int(1.2 * GIB) // 16


def test_a_requested_mode_wins_and_says_so():
    plan = recommend(3, machine=Machine(2, 16 * GIB), mode="pipeline")
    assert plan.mode == "pipeline" and plan.reason == "chosen by the caller"
