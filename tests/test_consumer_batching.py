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


def test_the_consumer_loop_feeds_its_write_times_to_the_batching() -> None:
    from concurrent.futures import Future
    from dataclasses import replace

    from common.config import Config, ConsumerConfig, MarketStoreConfig
    from consumer.service import ConsumerService, Options
    from consumer.sink import FlushResult

    # no request is made: the writers only create HTTP sessions
    config = Config(marketstore=MarketStoreConfig(url="http://127.0.0.1:9/rpc"),
                    consumer=replace(ConsumerConfig(), batch_max_ms=20, batch_write_ratio=2,
                                     batch_adaptive_max_ms=500))
    service = ConsumerService(config, Options(group_id="unit"))
    try:
        assert service.batching.max_age_s() == pytest.approx(0.020)
        done: Future[FlushResult] = Future()
        done.set_result(FlushResult(rows_written={"trade": 10}, seconds=0.1))
        service._inflight = (done, {("t", 0): 11}, [], 0.0)
        service.consumer = _NoPartitions()  # type: ignore[assignment]
        assert service._complete_inflight(block=True)
        assert service.batching.max_age_s() == pytest.approx(0.200)
    finally:
        service.close()


class _NoPartitions:
    """Stands in for the Kafka consumer where the bookkeeping asks for positions (none)."""

    def position(self, _partitions: list) -> list:
        return []

    def close(self) -> None:
        pass
