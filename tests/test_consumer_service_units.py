"""ConsumerService state and resources without Kafka (callbacks called directly)."""

from __future__ import annotations

from dataclasses import replace

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
        batch = list(range(1, 50_001))  # a replay batch of batch_max_events receive times
        for _ in range(40):
            service._sample_latencies(batch)
        kept = sum(len(a) for a in service.latencies_ns)
        assert 0 < kept <= MAX_LATENCY_SAMPLES
        assert len(service.latencies_ns[-1]) == len(batch)  # the newest batch is kept
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
