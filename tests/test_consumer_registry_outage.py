"""A schema registry outage is not a poison message: the consumer holds the events back
(no dead letter, no commit) and writes them once the registry answers again."""

from __future__ import annotations

import dataclasses
import time

from common.config import SchemaRegistryConfig
from consumer.testkit import (
    ThreadedConsumer,
    assert_buckets_equal,
    create_topics,
    expected_buckets,
    make_config,
    publish,
    row_count,
    trades_stream,
    unique,
    wait_for,
)
from schemas.codec import make_codec
from schemas.registry_standin import RegistryStandIn


def test_registry_outage_holds_events_back_then_writes_them(kafka_bootstrap: str,
                                                             marketstore_url: str) -> None:
    base = make_config(kafka_bootstrap, marketstore_url)
    create_topics(base)
    sym = unique("RG")
    records = [("trade", t) for t in trades_stream(sym, 40)]
    with RegistryStandIn() as registry:
        config = dataclasses.replace(base, schema_registry=SchemaRegistryConfig(registry.url))
        publish(config, records)
        port = int(registry.url.rsplit(":", 1)[1])
    tbk = f"{sym}/1Sec/TRADE"
    # The registry is down: the consumer cannot resolve the schema id of any message.
    with ThreadedConsumer(config) as running:
        time.sleep(4)
        assert running.thread.is_alive()
        assert running.service.dead_letters == 0
        assert row_count(marketstore_url, tbk) == 0
        # Back up on the same address, knowing the same schema (ids are assigned in order).
        with RegistryStandIn(port=port) as again:
            make_codec(dataclasses.replace(
                base, schema_registry=SchemaRegistryConfig(again.url))).encode(*records[0])
            wait_for(lambda: row_count(marketstore_url, tbk) >= 40, 60, what="rows")
    assert running.service.dead_letters == 0
    assert_buckets_equal(marketstore_url, expected_buckets(records))
