"""Kafka -> consumer -> MarketStore against the real servers: exactly once, row by row."""

from __future__ import annotations

import pytest

from tests.support.readback import read_dead_letters
from tests.support.testkit import (
    BASE_NS,
    ThreadedConsumer,
    assert_buckets_equal,
    bar,
    create_topics,
    expected_buckets,
    make_config,
    publish,
    quotes_stream,
    row_count,
    trade,
    trades_stream,
    unique,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _records(sym: str) -> list[tuple[str, dict]]:
    recs: list[tuple[str, dict]] = [("trade", t) for t in trades_stream(sym, 300)]
    recs += [("quote", q) for q in quotes_stream(sym, 200)]
    recs += [("bar", bar(sym, BASE_NS + i * 60 * 10**9)) for i in range(5)]
    recs += [("bar", bar(sym, BASE_NS, "1D", source="backfill"))]
    recs += [("bar", bar(sym, BASE_NS + 300 * 10**9, "5Min", source="backfill"))]
    return recs


def test_everything_lands_once_and_replay_changes_nothing(kafka_bootstrap: str,
                                                          marketstore_url: str) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    a, b = unique("EA"), unique("EB")
    recs = _records(a) + _records(f"{b}/W")
    # the REST (ns) shape of live (ms) prints already sent: same sequence numbers
    first = trades_stream(a, 300)
    rest = [trade(a, t["sequence_number"], t["sip_timestamp_ns"] + 654_321, source="backfill",
                  participant_timestamp_ns=t["sip_timestamp_ns"] - 10)
            for t in first[100:150]]
    # two distinct prints with the same timestamp
    same_ts = [trade(a, 1000, BASE_NS + 9 * 10**9), trade(a, 1001, BASE_NS + 9 * 10**9)]
    recs += [("trade", t) for t in rest + same_ts]
    publish(config, recs)
    expected = expected_buckets(recs)
    assert len(expected[f"{a}/1Sec/TRADE"]) == 302
    with ThreadedConsumer(config):
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 60, what="rows in MarketStore")
    assert_buckets_equal(marketstore_url, expected)
    assert f"{b}.W/1Sec/TRADE" in expected

    # the same topics again, fresh group (a replay) plus a redelivery of some of them
    publish(config, recs[:50])
    with ThreadedConsumer(config, group_id=unique("replay")) as replay:
        wait_for(lambda: replay.service.metrics.duplicates._value.get() >= len(recs) - 120,
                 60, what="replay to pass over everything")
    with ThreadedConsumer(config) as again:  # the original group: a plain redelivery
        wait_for(lambda: again.service.metrics.duplicates._value.get() >= 50, 60,
                 what="redelivered trades to be recognised")
    assert_buckets_equal(marketstore_url, expected)


def test_poison_messages_go_to_dead_letter_and_the_rest_lands(kafka_bootstrap: str,
                                                              marketstore_url: str) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    sym = unique("DL")
    good = [("trade", t) for t in trades_stream(sym, 50)]
    bad_value = trade(sym, 999, BASE_NS + 10**9, price=float("inf"))
    bad_symbol = trade("BAD:SYM", 1, BASE_NS)
    too_many = trade(sym, 998, BASE_NS + 2 * 10**9, conditions=[1, 2, 3, 4, 5])
    publish(config, [*good[:20], ("trade", bad_value), ("trade", bad_symbol),
                     ("trade", too_many), *good[20:]],
            raw=[(config.kafka.topics.trades, sym.encode(), b"\xc3\x01garbage")])
    with ThreadedConsumer(config) as running:
        wait_for(lambda: running.service.dead_letters >= 4 and
                 row_count(marketstore_url, f"{sym}/1Sec/TRADE") >= 50, 60,
                 what="dead letters and rows")
    assert_buckets_equal(marketstore_url, expected_buckets(good))
    got = read_dead_letters(config)
    assert len(got) == 4
    for m in got:
        headers = dict(m.headers())
        assert headers["source.topic"].decode() == config.kafka.topics.trades
        assert int(headers["source.offset"]) >= 0 and int(headers["source.partition"]) >= 0
        assert headers["error"]
    reasons = sorted(dict(m.headers())["error.reason"].decode() for m in got)
    assert reasons == ["decode", "invalid", "invalid", "invalid"]


def test_a_poison_message_too_large_for_the_dead_letter_topic_is_pointed_at(
        kafka_bootstrap: str, marketstore_url: str) -> None:
    """Its copy with our headers would exceed message.max.bytes: the dead letter carries
    the source coordinates and the size instead of the value, and the stream goes on."""
    import dataclasses

    config = make_config(kafka_bootstrap, marketstore_url)
    config = config.replace(kafka=dataclasses.replace(
        config.kafka, producer={"message.max.bytes": 3000}))  # the dead-letter producer's
    create_topics(config)
    sym = unique("DB")
    good = [("trade", t) for t in trades_stream(sym, 30)]
    publish(config, good, raw=[(config.kafka.topics.trades, sym.encode(),
                                b"\xc3\x01" + bytes(5000))])
    with ThreadedConsumer(config) as running:
        wait_for(lambda: running.service.dead_letters >= 1 and
                 row_count(marketstore_url, f"{sym}/1Sec/TRADE") >= 30, 60,
                 what="the dead letter and the rows")
    assert_buckets_equal(marketstore_url, expected_buckets(good))
    got = read_dead_letters(config)
    assert len(got) == 1
    headers = dict(got[0].headers())
    assert got[0].value() is None
    assert headers["value.omitted.bytes"] == b"5002"
    assert headers["source.topic"].decode() == config.kafka.topics.trades
    assert headers["error.reason"] == b"decode"
