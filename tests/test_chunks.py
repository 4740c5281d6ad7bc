"""Chunk plans of remote maps: rounds of one chunk per worker, each half of what is left."""

from __future__ import annotations

import heapq
import math

import pytest

from hypernodes.engines import chunks
from hypernodes.engines.chunks import _rounds, _Sizer


def _ends(sizes: list[int], workers: int, started: list[int] | None = None) -> list[int]:
    """When each of ``workers`` equal workers ends (one time unit an item), each taking
    the next chunk as it frees, after the chunks already ``started`` on them."""
    free = list(started or [0] * workers)
    heapq.heapify(free)
    for size in sizes:
        heapq.heappush(free, heapq.heappop(free) + size)
    return free


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("left", [1, 2, 5, 7, 28, 100, 997, 10_000])
@pytest.mark.parametrize("least", [1, 3, 50])
def test_rounds_cover_every_item_and_equal_workers_end_together(
    left: int, workers: int, least: int
) -> None:
    most = max(1, -(-left // workers))
    sizes = _rounds(left, workers, min(least, most), most)
    assert sum(sizes) == left and min(sizes) >= 1 and max(sizes) <= most
    assert sizes == sorted(sizes, reverse=True), "chunks shrink towards the end"
    # Each round is one chunk per worker, at most one item apart.
    for at in range(0, len(sizes), workers):
        assert max(sizes[at : at + workers]) - min(sizes[at : at + workers]) <= 1
    ends = _ends(sizes, workers)
    assert max(ends) - min(ends) <= 1 or len(sizes) < workers
    # Few calls: one a worker per halving, down to ``least`` items a chunk.
    halvings = math.log2(max(1, left / (workers * least)))
    assert len(sizes) <= workers * (halvings + 2)


def test_rounds_never_exceed_the_biggest_chunk_allowed() -> None:
    sizes = _rounds(1000, 2, 1, 40)
    assert max(sizes) == 40 and sum(sizes) == 1000
    assert sizes[:4] == [40, 40, 40, 40]


def test_a_costly_executors_map_is_planned_in_halving_rounds_once_timed() -> None:
    # 32 items of 30 ms on 2 workers: 4 one-item chunks go before any is timed (2
    # running, 2 waiting on the workers), then the 28 left in halving rounds down to
    # the target's worth (here 1 item, then 3), the last round even.
    for target, rest in ((0.05, [7, 7, 4, 4, 2, 2, 1, 1]), (0.1, [7, 7, 4, 4, 3, 3])):
        sizer = _Sizer(32, 2, target, rounds=True)
        first = [sizer.take() for _ in range(4)]
        sizer.measured(1, 0.03, 100)
        planned = [sizer.take() for _ in range(len(rest))]
        assert (first, planned, sizer.cut) == ([1, 1, 1, 1], rest, 32)
        # 12 calls where chunks of at most the target's worth made 14 (0.1 s: 3 items)
        # or 18 (0.05 s: 1 item); the workers end within an item of each other.
        ends = _ends(planned, 2, started=[2, 2])
        assert max(ends) - min(ends) <= 1
        sizer.measured(7, 7 * 0.03, 700)  # later measurements leave the plan alone
        assert sizer.take() == sizer.size  # (nothing left: the map stops cutting)


def test_planned_chunks_stay_within_the_byte_bound() -> None:
    sizer = _Sizer(1000, 2, 0.05, rounds=True)
    for _ in range(4):
        sizer.take()
    sizer.measured(31, 31 * 0.01, 31 * (chunks.MAX_BYTES // 50))  # 50 items fill a chunk
    planned = [sizer.take() for _ in range(100) if sizer.cut < 1000]
    assert max(planned) == 50 and sum(planned) == 1000 - 4 * 31


def test_without_rounds_each_chunk_is_sized_as_it_is_cut() -> None:
    # A local process pool's calls are cheap: chunks of the target's worth, no plan.
    sizer = _Sizer(32, 2, 0.1)
    assert [sizer.take() for _ in range(2)] == [1, 1]
    sizer.measured(1, 0.03, 100)
    assert [sizer.take() for _ in range(3)] == [3, 3, 3] and not sizer.plan
