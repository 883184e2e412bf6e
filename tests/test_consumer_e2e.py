"""End to end: simulator -> producer (CLI) -> Kafka -> consumer -> MarketStore == ground truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from consumer.testkit import (
    ThreadedConsumer,
    assert_buckets_equal,
    create_topics,
    expected_buckets,
    make_config,
    row_count,
    unique,
    wait_for,
)
from producer.mapping import record_from_ws_event
from simulator.server import SimulatorServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def test_simulator_to_marketstore_equals_ground_truth(kafka_bootstrap: str,
                                                      marketstore_url: str,
                                                      tmp_path: Path) -> None:
    symbols = [unique("SE"), f"{unique('SF')}/A"]  # a "/" ticker lands as "."
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    with SimulatorServer(symbols=symbols, trades_per_second=30, quotes_per_second=30, seed=11,
                         tick_ms=20) as sim:
        path = tmp_path / "producer.yml"
        k = config.kafka
        path.write_text(yaml.safe_dump({
            "massive": {"api_key": "e2e-key", "ws_server": f"ws://127.0.0.1:{sim.port}",
                        "symbols": symbols, "data_types": ["bars", "trades", "quotes"]},
            "kafka": {"bootstrap_servers": k.bootstrap_servers, "partitions": k.partitions,
                      "topics": {"bars": k.topics.bars, "trades": k.topics.trades,
                                 "quotes": k.topics.quotes, "dead_letter": k.topics.dead_letter}},
            "producer": {"gaps_file": str(tmp_path / "gaps.jsonl"), "gap_repair": False},
            "metrics": {"producer_port": 0},
        }))
        env = {key: v for key, v in os.environ.items()
               if key not in ("MASSIVE_API_KEY", "MASSIVE_WS_SERVER", "MASSIVE_FETCHER_CONFIG")}
        with ThreadedConsumer(config) as running:
            log = (tmp_path / "producer.log").open("wb")
            producer = subprocess.Popen(
                [sys.executable, "-m", "massive_fetcher", "producer", "--config", str(path)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: any(c["counts"].get("T", 0) > 100
                                     for c in sim.connections()), 60, what="streaming")
                sim.burst(2000)
                minute = (time.time_ns() // 60_000_000_000 - 1) * 60_000_000_000
                assert sim.send_minute(minute) >= 1  # AM bars for the last whole minute
                time.sleep(1.0)
                producer.send_signal(signal.SIGTERM)
                assert producer.wait(60) == 0, (tmp_path / "producer.log").read_text()[-2000:]
            finally:
                if producer.poll() is None:
                    producer.kill()
                    producer.wait(10)
            sent = [record_from_ws_event(ev, None) for ev in sim.sent_events()]
            expected = expected_buckets(sent)
            assert {t.split("/")[2] for t in expected} == {"TRADE", "QUOTE", "OHLCV"}
            assert any(t.startswith(symbols[1].replace("/", ".")) for t in expected)
            wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                                 for t, e in expected.items()), 60, what="rows")
            assert running.service.dead_letters == 0
    assert_buckets_equal(marketstore_url, expected)
    assert sum(len(e) for e in expected.values()) > 2000
