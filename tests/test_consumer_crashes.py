"""Crashes against the real servers: kill -9 of MarketStore, of consumers; a group of three."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from consumer.writer import MarketStoreError
from tests.support.configfile import write_config_file
from tests.support.testkit import (
    BASE_NS,
    ThreadedConsumer,
    assert_buckets_equal,
    consumer_process,
    create_topics,
    expected_buckets,
    log_events,
    make_config,
    ownership_violations,
    publish,
    quotes_stream,
    row_count,
    stop_processes,
    trades_stream,
    unique,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _chunk(symbols: list[str], i: int, n: int) -> list[tuple[str, dict]]:
    start = BASE_NS + i * n * 5_000_000
    out: list[tuple[str, dict]] = []
    for s in symbols:
        out += [("trade", t) for t in trades_stream(s, n, start, 5_000_000, 1 + i * n)]
        out += [("quote", q) for q in quotes_stream(s, n // 2, start, 10_000_000,
                                                     1 + i * n // 2)]
    return out


def _eventually_equal(url: str, expected: dict, timeout: float) -> None:
    def equal() -> bool:
        assert_buckets_equal(url, expected)
        return True

    # a restarted server may still refuse reads (MarketStoreError)
    wait_for(equal, timeout, "MarketStore to hold the expected rows",
             retry_on=(AssertionError, MarketStoreError), interval_s=0.5)


def test_kill_9_of_marketstore_mid_stream(kafka_bootstrap: str, marketstore_control) -> None:
    url = marketstore_control.marketstore_url
    config = make_config(kafka_bootstrap, url)
    create_topics(config)
    symbols = [unique("MK") for _ in range(3)]
    sent: list[tuple[str, dict]] = []
    with ThreadedConsumer(config) as running:
        for i in range(6):
            chunk = _chunk(symbols, i, 400)
            publish(config, chunk)
            sent += chunk
            if i == 2:
                # the consumer is mid-stream: some of chunk 2 written, some not
                wait_for(lambda: row_count(url, f"{symbols[0]}/1Sec/TRADE") > 0, 30,
                         interval_s=0.05, what="first rows")
                marketstore_control.kill_marketstore()
                time.sleep(1.0)
                marketstore_control.start_marketstore()
            time.sleep(0.3)
        expected = expected_buckets(sent)
        _eventually_equal(url, expected, 90)
        assert running.service.metrics.store_errors._value.get() >= 1
    _eventually_equal(url, expected, 5)


def _assignments(log: Path) -> int:
    """How many assignments with partitions the member logged (it joined the group)."""
    return sum(e.get("msg") == "partitions assigned" and bool(e.get("partitions"))
               for e in log_events(log, missing_ok=True))


def test_three_consumers_one_killed_then_restarted(kafka_bootstrap: str, marketstore_url: str,
                                                   tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url, partitions=6,
                         batch_max_events=2000)
    create_topics(config)
    config_path = tmp_path / "config.yml"
    write_config_file(config, config_path)
    symbols = [unique("GR") for _ in range(6)]
    logs = {f"m{i}": tmp_path / f"m{i}.log" for i in range(3)}
    procs = {m: consumer_process(config_path, m, p) for m, p in logs.items()}
    sent: list[tuple[str, dict]] = []
    stop = threading.Event()
    try:
        wait_for(lambda: all(_assignments(path) for path in logs.values()), 60,
                 "every member to get partitions")
        joined = 0
        for i in range(8):
            chunk = _chunk(symbols, i, 300)
            publish(config, chunk)
            sent += chunk
            if i == 3:
                procs["m1"].send_signal(signal.SIGKILL)  # mid-stream, likely mid-batch
                procs["m1"].wait(10)
            if i == 6:
                joined = _assignments(logs["m1"])
                procs["m1"] = consumer_process(config_path, "m1", logs["m1"])
            time.sleep(0.5)
        expected = expected_buckets(sent)
        _eventually_equal(marketstore_url, expected, 120)
        # stopped before it has started, the new member would die of the SIGTERM (-15)
        wait_for(lambda: _assignments(logs["m1"]) > joined, 90, "the restarted member to join")
    finally:
        stop.set()
        stop_processes(procs.values())
    assert all(p.returncode == 0 for m, p in procs.items()), {
        m: p.returncode for m, p in procs.items()}
    assert ownership_violations(logs) == []
    _eventually_equal(marketstore_url, expected, 5)
    written = sum(1 for p in logs.values() for line in p.read_bytes().splitlines()
                  if b'"batch written"' in line)
    assert written > 3


def test_kill_9_of_the_consumer_mid_batch_then_restart(kafka_bootstrap: str,
                                                       marketstore_url: str,
                                                       tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url, batch_max_events=2000)
    create_topics(config)
    config_path = tmp_path / "config.yml"
    write_config_file(config, config_path)
    symbols = [unique("KC") for _ in range(2)]
    sent: list[tuple[str, dict]] = []
    for i in range(20):
        sent += _chunk(symbols, i, 1000)
    publish(config, sent)
    expected = expected_buckets(sent)
    log = tmp_path / "c.log"
    proc = consumer_process(config_path, "k1", log)
    try:
        # some batches written, most not: the kill lands in the middle of the stream
        wait_for(lambda: log.exists() and log.read_bytes().count(b'"batch written"') >= 2,
                 60, interval_s=0.01, what="first batches")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored = sum(row_count(marketstore_url, t) for t in expected)
        assert 0 < stored < sum(len(e) for e in expected.values())
        proc = consumer_process(config_path, "k1", log)
        _eventually_equal(marketstore_url, expected, 90)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    _eventually_equal(marketstore_url, expected, 5)
