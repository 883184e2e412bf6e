"""A schema registry outage is not a poison message: against a real registry killed -9
mid-stream, the consumer keeps writing what its schema cache resolves, holds back (no dead
letter, no commit) what it cannot, and writes it once the registry answers again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.config import SchemaRegistryConfig
from schemas.codec import Codec, make_codec
from schemas.registry import Registry
from tests.support.registry import private_registry
from tests.support.samples import TRADE_V2
from tests.support.testkit import (
    BASE_NS,
    ThreadedConsumer,
    assert_buckets_equal,
    create_topics,
    expected_buckets,
    make_config,
    publish,
    row_count,
    trades_stream,
    unique,
)
from tests.support.wait import wait_for

STEP_NS = 7_000_000


def test_registry_killed_mid_stream_cache_serves_then_held_back_events_land(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    base = make_config(kafka_bootstrap, marketstore_url)
    create_topics(base)
    sym = unique("RG")
    tbk = f"{sym}/1Sec/TRADE"
    first, cached, evolved = (trades_stream(sym, 40, start_ns=BASE_NS + i * 40 * STEP_NS,
                                            first_seq=1 + i * 40) for i in range(3))
    topic = base.kafka.topics.trades
    with private_registry(tmp_path / "registry") as registry:
        config = dataclasses.replace(
            base, schema_registry=SchemaRegistryConfig(registry.registry_url))
        v1 = make_codec(config)
        v2 = Codec({"trade": TRADE_V2}, registry=Registry(config.schema_registry),
                   subjects={"trade": f"{topic}-value"})
        # Encoded while the registry is up; produced while it is down.
        cached_raw = [(topic, r["symbol"].encode(), v1.encode("trade", r)) for r in cached]
        evolved_raw = [(topic, r["symbol"].encode(),
                        v2.encode("trade", {**r, "exchange_mic": "XNAS"})) for r in evolved]
        publish(config, [("trade", r) for r in first])
        with ThreadedConsumer(config) as running:
            wait_for(lambda: row_count(marketstore_url, tbk) >= 40, 60, what="first rows")
            registry.kill("registry")
            # v1's id is in the consumer's cache: no registry needed.
            publish(config, [], raw=cached_raw)
            wait_for(lambda: row_count(marketstore_url, tbk) >= 80, 60, what="cached rows")
            # v2's id is not: held back and retried, never dead-lettered.
            publish(config, [], raw=evolved_raw)
            errors = running.service.metrics.store_errors
            wait_for(lambda: errors._value.get() >= 2, 90, what="retried registry errors")
            assert running.thread.is_alive()
            assert running.service.dead_letters == 0
            assert row_count(marketstore_url, tbk) == 80
            registry.start("registry")  # same storage: the same ids
            wait_for(lambda: row_count(marketstore_url, tbk) >= 120, 90, what="held rows")
        assert running.service.dead_letters == 0
    records = [("trade", r) for r in [*first, *cached, *evolved]]
    assert_buckets_equal(marketstore_url, expected_buckets(records))
