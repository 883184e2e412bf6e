"""Issue 12B: one bucket is one Kafka key and one partition, whatever the ticker's spelling.

``BRK/A`` and ``BRK.A`` are one bucket (``BRK.A/...``). The simulator streams both (the same
security under two names, simulator/model.py); the producer (CLI) keys both as ``BRK.A``;
two consumers share the partitions, so a bucket fed from two partitions would have two
writers. Kafka must hold every record of both spellings on one partition, and the bucket
must equal the simulator's ground truth row by row: each event once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from common.config import Config
from producer.mapping import record_from_ws_event
from simulator.server import SimulatorServer
from tests.support.cliproducer import stream_a_burst_through_the_cli_producer
from tests.support.readback import committed_to_end, read_to_end
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
PARTITIONS = 8


def _raw_partitions(config: Config, keys: list[str]) -> list[int]:
    """The partitions Kafka gives these keys as they are (on the config's trades topic)."""
    got: dict[str, int] = {}
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    for key in keys:
        producer.produce(config.kafka.topics.trades, b"probe", key,
                         on_delivery=lambda err, msg: got.__setitem__(msg.key().decode(),
                                                                      msg.partition()))
    assert producer.flush(30) == 0
    return [got[k] for k in keys]


def _spellings_apart(kafka_bootstrap: str, marketstore_url: str) -> str:
    """A base ticker whose ``/`` and ``.`` spellings hash to different partitions as raw
    keys, so the test fails if the producer keys by the raw spelling."""
    scratch = make_config(kafka_bootstrap, marketstore_url, partitions=PARTITIONS)
    create_topics(scratch)
    for _ in range(30):
        base = unique("BK")
        slash, dot = _raw_partitions(scratch, [f"{base}/A", f"{base}.A"])
        if slash != dot:
            return base
    raise AssertionError("no ticker whose two spellings hash apart")


def test_both_spellings_stream_into_one_bucket_from_one_partition(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    base = _spellings_apart(kafka_bootstrap, marketstore_url)
    symbols = [f"{base}/A", f"{base}.A"]
    config = make_config(kafka_bootstrap, marketstore_url, partitions=PARTITIONS)
    create_topics(config)
    k = config.kafka
    # two members share the partitions: a bucket fed from two of them has two writers
    with SimulatorServer(symbols=symbols, trades_per_second=30, quotes_per_second=30, seed=12,
                         tick_ms=20) as sim, ThreadedConsumer(config) as one, \
            ThreadedConsumer(config) as two:
        stream_a_burst_through_the_cli_producer(config, sim, symbols, tmp_path,
                                                trades=200, timeout_s=90)
        events = sim.sent_events()
        sent = [record_from_ws_event(ev, None) for ev in events]
        expected = expected_buckets(sent)
        assert sorted(expected) == [f"{base}.A/1Min/OHLCV", f"{base}.A/1Min/QUOTE",
                                    f"{base}.A/1Sec/TRADE"]
        # the same security under two names: each event went out once per spelling
        by_sym = {s: sum(ev["sym"] == s for ev in events if ev["ev"] == "T")
                  for s in symbols}
        assert min(by_sym.values()) > 200, by_sym
        assert {ev["sym"] for ev in events if ev["ev"] == "AM"} == set(symbols)
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 120, what="rows")
        # a duplicate written late would show in the comparison below
        wait_for(lambda: committed_to_end(config), 60, what="the group to commit everything")
        assert one.service.dead_letters == 0 and two.service.dead_letters == 0
    assert_buckets_equal(marketstore_url, expected)
    assert len(expected[f"{base}.A/1Sec/TRADE"]) >= max(by_sym.values())

    messages = read_to_end(config, [k.topics.trades, k.topics.quotes, k.topics.bars])
    assert len(messages) == len(sent)
    assert {m.key() for m in messages} == {f"{base}.A".encode()}
    for topic in (k.topics.trades, k.topics.quotes, k.topics.bars):
        assert len({m.partition() for m in messages if m.topic() == topic}) == 1, topic
