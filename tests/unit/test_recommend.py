import pytest

from tasks.recommend import GIB, TANTIVY_HEAP_PER_THREAD, Machine, choose_mode, recommend


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
    assert big.file_batch_size == 128 and big.max_in_flight == 3
    assert big.tantivy_threads == 2 and big.tantivy_heap_bytes == 2 * TANTIVY_HEAP_PER_THREAD
    parallel = recommend(800, machine=Machine(8, 32 * GIB))
    assert parallel.mode == "parallel" and parallel.workers == 8 and parallel.embed_threads == 1
    assert parallel.parse_processes == 4
    assert parallel.fast_session and not piped.fast_session and not big.fast_session  # memory to spare only
    tight = recommend(800, 50 * 1024 * 1024, machine=Machine(2, int(1.2 * GIB)))
    assert tight.tantivy_threads == 1 and tight.tantivy_heap_bytes == TANTIVY_HEAP_PER_THREAD


def test_a_requested_mode_wins_and_says_so():
    plan = recommend(3, machine=Machine(2, 16 * GIB), mode="pipeline")
    assert plan.mode == "pipeline" and plan.reason == "chosen by the caller"


def test_batches_are_bounded_by_files_and_by_bytes():
    from pathlib import Path

    from flows.modes import batches
    from tasks.records import SourceFile

    files = [SourceFile(f"{i}.rs", Path(f"/x/{i}.rs"), size, 0) for i, size in enumerate([10, 10, 10, 50, 200, 10, 10])]
    cut = batches(files, size=3, max_bytes=100)
    assert [[f.rel_path for f in batch] for batch in cut] == [
        ["0.rs", "1.rs", "2.rs"],  # three files: the file limit
        ["3.rs"],  # 50 + 200 would pass 100 bytes
        ["4.rs"],  # larger than a batch: alone
        ["5.rs", "6.rs"],
    ]
    assert [f for batch in cut for f in batch] == files  # every file once, in order
    assert batches([], size=3, max_bytes=100) == []
