"""RecentWrites: the ranges a WAL replay can have doubled, per bucket (pure logic)."""

from __future__ import annotations

import random

from consumer.dedupe import MAX_READ_RANGES, WINDOW_NS
from consumer.recent import RecentWrites

S = 1_000_000_000


def ranges_of(recent: RecentWrites, now: float) -> dict[int, list[tuple[int, int]]]:
    return {b: list(zip(lo.tolist(), hi.tolist(), strict=True))
            for b, lo, hi in recent.ranges(now)}


def test_the_live_path_grows_one_range_and_a_jump_starts_another() -> None:
    recent = RecentWrites(horizon_s=420)
    recent.add(0.0, 7, 100 * S, 101 * S)
    recent.add(1.0, 7, 101 * S + 1, 103 * S)  # continues the last range
    recent.add(2.0, 7, 102 * S, 102 * S)  # inside it: the end does not shrink
    recent.add(3.0, 7, 103 * S + 2 * WINDOW_NS, 104 * S)  # within two windows of its end
    recent.add(4.0, 7, 900 * S, 901 * S)  # a jump
    recent.add(4.0, 8, 5 * S, 6 * S)
    assert ranges_of(recent, 5.0) == {7: [(100 * S, 104 * S), (900 * S, 901 * S)],
                                      8: [(5 * S, 6 * S)]}


def test_ranges_older_than_the_horizon_are_forgotten() -> None:
    recent = RecentWrites(horizon_s=10)
    recent.add(0.0, 1, 0, S)
    recent.add(5.0, 1, 100 * S, 101 * S)
    recent.add(0.0, 2, 0, S)
    assert ranges_of(recent, 12.0) == {1: [(100 * S, 101 * S)]}
    assert len(recent) == 1
    recent.add(30.0, 1, 200 * S, 201 * S)  # everything before it expired: a fresh start
    assert ranges_of(recent, 30.0) == {1: [(200 * S, 201 * S)]}
    recent.drop(1)
    assert ranges_of(recent, 30.0) == {} and len(recent) == 0


def test_many_scattered_writes_stay_bounded_and_every_written_range_stays_covered() -> None:
    rng = random.Random(5)
    recent = RecentWrites(horizon_s=1e6)
    written = []
    for i in range(2000):
        a = rng.randrange(0, 10**6) * S
        z = a + rng.randrange(0, 3) * S
        written.append((a, z))
        recent.add(float(i), 3, a, z)
        [(_, lo, hi)] = recent.ranges(float(i))
        assert len(lo) <= MAX_READ_RANGES
    pairs = list(zip(lo.tolist(), hi.tolist(), strict=True))
    assert all(any(lo_ <= a and z <= hi_ for lo_, hi_ in pairs) for a, z in written)


def test_a_merged_range_keeps_the_latest_write_time_of_its_parts() -> None:
    recent = RecentWrites(horizon_s=100)
    for i in range(MAX_READ_RANGES + 1):  # the last add merges
        recent.add(float(i), 4, i * 10 * S, i * 10 * S)
    # the early parts were written long before the horizon, the merged ranges are not
    merged = ranges_of(recent, MAX_READ_RANGES + 99.0)[4]
    assert 1 <= len(merged) <= MAX_READ_RANGES // 2
    assert merged[0][0] == 0 and merged[-1][1] == MAX_READ_RANGES * 10 * S
