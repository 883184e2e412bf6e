"""Daily bars across New Year: MarketStore v4.1 cannot hold a 1D row on 1 January (it
accepts the write and never returns the row), so that bar goes to the dead-letter topic
with the reason, the others land, and the consumer keeps committing (its read-back probe
never waits on a row MarketStore cannot return)."""

from __future__ import annotations

import numpy as np
import pymarketstore as pymkts
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumer.buckets import RecordError, on_january_first, to_row
from tests.support.testkit import (
    ThreadedConsumer,
    assert_buckets_equal,
    bar,
    create_topics,
    expected_buckets,
    make_config,
    publish,
    unique,
)
from tests.support.wait import wait_for

DAY_NS = 86_400 * 1_000_000_000
DEC_30_2023 = 1_703_894_400 * 1_000_000_000


def test_marketstore_drops_a_daily_row_on_january_first(marketstore_url: str) -> None:
    """Pins the server behaviour the rule above rests on."""
    client = pymkts.Client(marketstore_url)
    sym = unique("NY")
    dtype = [("Epoch", "i8"), ("Open", "f8"), ("High", "f8"), ("Low", "f8"), ("Close", "f8"),
             ("Volume", "f8")]
    epochs = [1_703_980_800, 1_704_067_200, 1_704_153_600]  # 31 Dec, 1 Jan, 2 Jan 2024
    client.write(np.array([(e, 1, 1, 1, 1, 1) for e in epochs], dtype=dtype), f"{sym}/1D/OHLCV")
    stored = client.query(pymkts.Params(sym, "1D", "OHLCV")).first().array["Epoch"].tolist()
    assert stored == [epochs[0], epochs[2]]


def test_on_january_first() -> None:
    assert on_january_first(1_704_067_200) and on_january_first(1_704_067_200 + 86_399)
    assert not on_january_first(1_704_067_200 - 1) and not on_january_first(1_704_153_600)
    with pytest.raises(RecordError, match="1 January"):
        to_row("bar", bar("X", 1_704_067_200 * 1_000_000_000, "1D", source="backfill"))
    # other timeframes are stored on 1 January
    to_row("bar", bar("X", 1_704_067_200 * 1_000_000_000, "1H", source="backfill"))


def test_daily_bars_across_new_year(kafka_bootstrap: str, marketstore_url: str) -> None:
    config = make_config(kafka_bootstrap, marketstore_url, partitions=1)
    create_topics(config)
    sym = unique("NY")
    records = [("bar", bar(sym, DEC_30_2023 + i * DAY_NS, "1D", source="backfill"))
               for i in range(5)]  # 30 Dec 2023 .. 3 Jan 2024
    publish(config, records)
    with ThreadedConsumer(config) as running:
        wait_for(lambda: running.service.dead_letters >= 1, 60, what="the dead letter")
        expected = expected_buckets(records)
        assert len(expected[f"{sym}/1D/OHLCV"]) == 4
        wait_for(lambda: _committed(config) == len(records), 60, what="offsets committed")
    assert running.service.dead_letters == 1
    assert_buckets_equal(marketstore_url, expected)


def _committed(config) -> int:
    reader = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                       "group.id": config.consumer.group_id})
    try:
        (tp,) = reader.committed([TopicPartition(config.kafka.topics.bars, 0)], timeout=10)
        return tp.offset
    finally:
        reader.close()
