"""End to end: simulator -> producer (CLI) -> Kafka -> consumer -> MarketStore == ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.mapping import record_from_ws_event
from simulator.server import SimulatorServer
from tests.support.cliproducer import stream_a_burst_through_the_cli_producer
from tests.support.testkit import (
    ThreadedConsumer,
    assert_buckets_equal,
    create_topics,
    expected_buckets,
    make_config,
    row_count,
    unique,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_simulator_to_marketstore_equals_ground_truth(kafka_bootstrap: str,
                                                      marketstore_url: str,
                                                      tmp_path: Path) -> None:
    symbols = [unique("SE"), f"{unique('SF')}/A"]  # a "/" ticker lands as "."
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    with SimulatorServer(symbols=symbols, trades_per_second=30, quotes_per_second=30, seed=11,
                         tick_ms=20) as sim, ThreadedConsumer(config) as running:
        stream_a_burst_through_the_cli_producer(config, sim, symbols, tmp_path,
                                                trades=100, timeout_s=60)
        sent = [record_from_ws_event(ev, None) for ev in sim.sent_events()]
        expected = expected_buckets(sent)
        assert {t.split("/")[2] for t in expected} == {"TRADE", "QUOTE", "OHLCV"}
        assert any(t.startswith(symbols[1].replace("/", ".")) for t in expected)
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 60, what="rows")
        assert running.service.dead_letters == 0
    assert_buckets_equal(marketstore_url, expected)
    assert sum(len(e) for e in expected.values()) > 2000
