"""The FILE_UPLOAD chunk plan against TikTok's chunk rules (media transfer guide): sizes 5-64 MB, the last
chunk absorbing the remainder up to 128 MB, a file under 5 MB whole, over 64 MB in several chunks,
total_chunk_count = floor(video_size / chunk_size), 1 to 1000 chunks."""

from __future__ import annotations

import random

import pytest

from reelfab_publisher.chunks import (
    MAX_CHUNK,
    MAX_CHUNKS,
    MAX_LAST_CHUNK,
    MIN_CHUNK,
    ChunkPlan,
    chunk_plan,
    plan_problem,
)

MB = 1024 * 1024
GB = 1024 * MB


def assert_keeps_the_rules(plan: ChunkPlan) -> None:
    """Every byte exactly once, in order, and every chunk within TikTok's limits."""
    ranges = plan.ranges()
    assert len(ranges) == plan.total_chunk_count == plan.video_size // plan.chunk_size
    assert 1 <= plan.total_chunk_count <= MAX_CHUNKS
    assert ranges[0][0] == 0 and ranges[-1][1] == plan.video_size - 1
    for (_, last), (first, _) in zip(ranges, ranges[1:], strict=False):
        assert first == last + 1  # contiguous: no gap, no overlap
    sizes = [last - first + 1 for first, last in ranges]
    assert sum(sizes) == plan.video_size
    if plan.video_size < MIN_CHUNK:
        assert sizes == [plan.video_size] and plan.chunk_size == plan.video_size
        return
    assert all(size == plan.chunk_size for size in sizes[:-1])
    assert all(MIN_CHUNK <= size <= MAX_CHUNK for size in sizes[:-1])
    assert plan.chunk_size <= sizes[-1] <= MAX_LAST_CHUNK and sizes[-1] >= MIN_CHUNK
    if plan.video_size > MAX_CHUNK:
        assert plan.total_chunk_count >= 2


@pytest.mark.parametrize(("size", "chunk", "count", "last_chunk"), [
    (1 * MB, 1 * MB, 1, 1 * MB),  # under 5 MB: whole
    (5 * MB, 5 * MB, 1, 5 * MB),  # not over the preferred 10 MB: whole
    (63 * MB, 10 * MB, 6, 13 * MB),  # the last chunk takes the 3 MB remainder
    (64 * MB, 10 * MB, 6, 14 * MB),
    (65 * MB, 10 * MB, 6, 15 * MB),
    (200 * MB, 10 * MB, 20, 10 * MB),  # an exact multiple: no remainder
    (6 * GB, 10 * MB, 614, 14 * MB),  # 614 chunks, within 1000
])
def test_plans_with_the_default_chunk_size(size: int, chunk: int, count: int, last_chunk: int) -> None:
    plan = chunk_plan(size)
    assert (plan.video_size, plan.chunk_size, plan.total_chunk_count) == (size, chunk, count)
    first, last = plan.ranges()[-1]
    assert last - first + 1 == last_chunk
    assert_keeps_the_rules(plan)


def test_a_64_mb_file_can_go_whole_and_a_65_mb_file_cannot() -> None:
    whole = chunk_plan(64 * MB, preferred_chunk_size=64 * MB)
    assert (whole.chunk_size, whole.total_chunk_count) == (64 * MB, 1)
    split = chunk_plan(65 * MB, preferred_chunk_size=64 * MB)  # over 64 MB must be several chunks
    assert split.total_chunk_count == 2 and split.chunk_size == 65 * MB // 2
    assert_keeps_the_rules(whole)
    assert_keeps_the_rules(split)


def test_a_big_file_grows_the_chunk_to_stay_within_1000_chunks() -> None:
    plan = chunk_plan(6 * GB, preferred_chunk_size=5 * MB)  # 5 MB chunks would make 1228
    assert plan.chunk_size == 7 * MB and plan.total_chunk_count == 877
    assert_keeps_the_rules(plan)


def test_the_largest_plannable_file_and_one_byte_more() -> None:
    largest = 1001 * MAX_CHUNK - 1  # 999 chunks of 64 MB and a last one just under 128 MB
    plan = chunk_plan(largest)
    assert (plan.chunk_size, plan.total_chunk_count) == (MAX_CHUNK, MAX_CHUNKS)
    assert_keeps_the_rules(plan)
    with pytest.raises(ValueError, match="too large"):
        chunk_plan(largest + 1)


@pytest.mark.parametrize("size", [0, -1])
def test_a_size_that_is_not_positive_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        chunk_plan(size)


@pytest.mark.parametrize("preferred", [MIN_CHUNK - 1, MAX_CHUNK + 1])
def test_a_preferred_chunk_size_outside_the_rules_is_refused(preferred: int) -> None:
    with pytest.raises(ValueError, match="preferred_chunk_size"):
        chunk_plan(100 * MB, preferred_chunk_size=preferred)


def test_random_sizes_always_give_plans_that_keep_the_rules() -> None:
    rng = random.Random(20261201)
    for _ in range(500):
        size = rng.choice([rng.randint(1, 200 * MB), rng.randint(1, 1001 * MAX_CHUNK - 1)])
        plan = chunk_plan(size, preferred_chunk_size=rng.randint(MIN_CHUNK, MAX_CHUNK))
        assert_keeps_the_rules(plan)


@pytest.mark.parametrize(("size", "chunk", "count", "problem"), [
    (4 * MB, 2 * MB, 2, "goes whole"),
    (50 * MB, 4 * MB, 12, "outside"),
    (50 * MB, 10 * MB, 4, "total_chunk_count must be"),
    (100 * MB, 65 * MB, 1, "outside"),
    (100 * MB, 60 * MB, 1, "several chunks"),
    (1200 * MB, 5 * MB, 240, None),
])
def test_plan_problem_names_the_broken_rule(size: int, chunk: int, count: int, problem: str | None) -> None:
    found = plan_problem(size, chunk, count)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        with pytest.raises(ValueError, match=problem):
            ChunkPlan(size, chunk, count)


def test_resume_index_finds_the_next_chunk_after_the_received_bytes() -> None:
    plan = chunk_plan(16 * MB, preferred_chunk_size=5 * MB)  # 5, 5, 6 MB
    assert [plan.resume_index(n) for n in (0, 5 * MB, 10 * MB, 16 * MB)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not a chunk boundary"):
        plan.resume_index(7 * MB)
