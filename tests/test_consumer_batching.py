"""consumer.batching: how old a batch may get, from the measured write times (pure logic)."""

from __future__ import annotations

import pytest

from consumer.batching import AdaptiveBatching


def test_off_by_default_ratio_keeps_batch_max_ms() -> None:
    b = AdaptiveBatching(batch_max_ms=20, write_ratio=0, adaptive_max_ms=200)
    b.observe(0.5)
    assert b.max_age_s() == pytest.approx(0.020)


def test_fast_writes_keep_the_floor() -> None:
    b = AdaptiveBatching(batch_max_ms=20, write_ratio=2, adaptive_max_ms=200)
    assert b.max_age_s() == pytest.approx(0.020)  # nothing measured yet
    for _ in range(10):
        b.observe(0.004)
    assert b.max_age_s() == pytest.approx(0.020)


def test_slow_writes_lengthen_the_batch_up_to_the_bound() -> None:
    b = AdaptiveBatching(batch_max_ms=20, write_ratio=2, adaptive_max_ms=200)
    for _ in range(30):
        b.observe(0.040)
    assert b.max_age_s() == pytest.approx(0.080, rel=0.01)
    for _ in range(30):
        b.observe(1.0)
    assert b.max_age_s() == pytest.approx(0.200)


def test_one_slow_write_moves_the_age_a_fifth_of_the_way() -> None:
    b = AdaptiveBatching(batch_max_ms=20, write_ratio=2, adaptive_max_ms=500)
    for _ in range(30):
        b.observe(0.020)
    b.observe(0.220)  # one spike
    assert b.max_age_s() == pytest.approx(2 * (0.020 + 0.2 * 0.200), rel=0.01)
    for _ in range(30):
        b.observe(0.020)
    assert b.max_age_s() == pytest.approx(0.040, rel=0.01)  # and back


def test_a_bound_below_the_floor_is_the_floor() -> None:
    b = AdaptiveBatching(batch_max_ms=50, write_ratio=3, adaptive_max_ms=10)
    b.observe(1.0)
    assert b.max_age_s() == pytest.approx(0.050)
