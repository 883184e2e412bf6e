"""ConsumerService state and resources without Kafka (callbacks called directly)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from confluent_kafka import KafkaException, TopicPartition

from common.config import Config, MarketStoreConfig
from consumer.service import MAX_LATENCY_SAMPLES, ConsumerService, Options
from consumer.writer import MarketStoreWriter


def test_a_lost_assignment_drops_the_whole_unflushed_batch() -> None:
    # no request is made: the writers only create HTTP sessions
    config = Config(marketstore=MarketStoreConfig(url="http://127.0.0.1:9/rpc"))
    service = ConsumerService(config, Options(group_id="unit"))
    try:
        service._batch_offsets[("t", 0)] = 5
        service._batch_received.append(1)
        service._batch_started = 123.0
        service._on_lost(None, [TopicPartition("t", 0)])  # type: ignore[arg-type]
        assert service._batch_offsets == {} and service._batch_received == []
        # a stale start would make every later poll wait 0 s: a busy loop while idle
        assert service._batch_started is None
        assert service.sink.pending == 0 and not service._pending
    finally:
        service.close()


def test_latency_samples_are_bounded_by_count_not_by_batches() -> None:
    config = Config(marketstore=MarketStoreConfig(url="http://127.0.0.1:9/rpc"))
    service = ConsumerService(config, Options(group_id="unit"))
    try:
        # a replay batch of batch_max_events receive times (as the poll loop collects them)
        batch = [np.arange(1, 25_001, dtype=np.int64), np.arange(25_001, 50_001, dtype=np.int64)]
        for _ in range(40):
            service._sample_latencies(batch, 60_000)
        kept = sum(len(a) for a in service.latencies_ns)
        assert 0 < kept <= MAX_LATENCY_SAMPLES
        assert len(service.latencies_ns[-1]) == 50_000  # the newest batch is kept
        # each ends when MarketStore acknowledged the write, not when the loop noticed
        assert service.latencies_ns[-1][0] == 60_000 - 1
        assert service.latencies_ns[-1][-1] == 60_000 - 50_000
    finally:
        service.close()


def test_close_releases_the_marketstore_connections(marketstore_url: str) -> None:
    config = Config(marketstore=MarketStoreConfig(url=marketstore_url))
    service = ConsumerService(config, Options(group_id="unit"))

    def pools(writer: MarketStoreWriter) -> int:
        return sum(len(a.poolmanager.pools) for a in writer._rpc._session.adapters.values())

    service.writer.ping()
    service.sink.writer.ping()
    assert pools(service.writer) == 1 and pools(service.sink.writer) == 1
    service.close()
    assert pools(service.writer) == 0 and pools(service.sink.writer) == 0


def test_a_failed_open_closes_what_it_opened() -> None:
    base = Config(marketstore=MarketStoreConfig(url="http://127.0.0.1:9/rpc"))
    # the group consumer is created, then the dead-letter producer refuses its settings
    config = replace(base, kafka=replace(base.kafka, producer={"no.such.property": "1"}))
    service = ConsumerService(config, Options(group_id="unit"))
    with pytest.raises(KafkaException):
        service.run()
    assert service.consumer is None  # closed, not left open in the group


class _FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[list[TopicPartition]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(offsets)


def test_the_commit_read_back_runs_off_the_loop_and_commits_only_what_it_verified() -> None:
    import threading
    import time

    from consumer.service import PendingCommit
    from consumer.sink import Probe

    config = Config(marketstore=MarketStoreConfig(url="http://127.0.0.1:9/rpc"))
    config = replace(config, consumer=replace(config.consumer, commit_delay_ms=0))
    service = ConsumerService(config, Options(group_id="unit"))
    fake = _FakeConsumer()
    release = threading.Event()
    service.consumer = fake  # type: ignore[assignment]
    service.sink.verify = lambda probe, writer=None: release.wait(5)  # type: ignore[method-assign]
    try:
        service._assigned = {("t", 0)}
        probe = Probe("X/1Sec/TRADE", 1, 1, 1)
        service._pending.append(PendingCommit(time.monotonic() - 1, {("t", 0): 10}, probe))
        service._maybe_commit()  # starts the read-back and returns at once
        assert service._verifying is not None and not fake.commits
        # the batch state is dropped meanwhile (a failure, a lost assignment): nothing commits
        service._drop_batch()
        service._pending.append(PendingCommit(time.monotonic() - 1, {("t", 0): 20}, probe))
        release.set()
        service._verifying[0].result(5)
        service._maybe_commit()
        assert not fake.commits and len(service._pending) == 1
        # the next read-back covers the new write and commits it
        service._last_commit = 0.0
        service._maybe_commit()
        assert service._verifying is not None
        service._verifying[0].result(5)
        service._maybe_commit()
        assert [(tp.topic, tp.partition, tp.offset) for tp in fake.commits[0]] == [("t", 0, 20)]
        assert not service._pending
    finally:
        service.consumer = None
        service.close()
