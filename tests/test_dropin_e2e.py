"""Drop-in for the Massive plugin's users, against the simulator and the real Kafka and
MarketStore: the plugin's own example configuration in a mkts.yml drives ``producer`` and
``consumer`` and ``backfill -config``; ``massive_backfiller`` runs the plugin README's two
invocations; a 15Min (and a 2H) backfill lands in its own bucket with the simulator's bars.

The mkts.yml is the plugin README's example as it stands (only ``listen_port`` points at
the test's MarketStore); what the plugin never had, Kafka, comes in a ``kafka:`` section
beside it, and the simulator's address through ``MASSIVE_WS_SERVER``/``MASSIVE_BASE_URL``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import Config, load_config
from common.timeframes import STORABLE, parse_timeframe
from consumer import buckets as consumer_buckets
from consumer.writer import MarketStoreWriter
from simulator.server import SimulatorServer
from tests.support.plugin_example import PLUGIN_EXAMPLE
from tests.support.readback import read_topics
from tests.support.testkit import (
    assert_buckets_equal,
    consume_into_marketstore,
    expected_buckets,
    read_bucket,
    row_count,
    stop_processes,
)
from tests.support.truth import as_set, ny_day, rest_results, truth_bars, truth_trades
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MINUTE_NS = 60_000_000_000
# what the environment may carry from a shared test setup; the file must speak instead
_DROPPED = ("MASSIVE_API_KEY", "MASSIVE_BASE_URL", "MASSIVE_WS_SERVER", "MASSIVE_FETCHER_CONFIG",
            "KAFKA_BOOTSTRAP_SERVERS", "MARKETSTORE_URL")


def mkts_yml(tmp_path: Path, kafka_bootstrap: str, marketstore_url: str,
             example: str = PLUGIN_EXAMPLE) -> tuple[Path, Config]:
    """The plugin's mkts.yml aimed at the test's MarketStore, plus a kafka: section."""
    tag = f"dropin-{uuid.uuid4().hex[:10]}"
    address = urllib.parse.urlparse(marketstore_url)
    text = (example.replace("listen_port: 15993", f"listen_port: {address.port}")
            .replace('listen_host: ""', f"listen_host: {address.hostname}"))
    text += yaml.safe_dump({
        "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 2,
                  "topics": {"bars": f"{tag}.bars", "trades": f"{tag}.trades",
                             "quotes": f"{tag}.quotes", "dead_letter": f"{tag}.dlq"},
                  "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}},
        "consumer": {"group_id": f"{tag}-group", "batch_max_ms": 100,
                     "commit_delay_ms": 300},
        "producer": {"gaps_file": str(tmp_path / "gaps.jsonl"), "gap_repair": False},
        "metrics": {"enabled": False},
        "services": {"state_dir": str(tmp_path / "state")},
    })
    path = tmp_path / "mkts.yml"
    path.write_text(text)
    config = load_config(path, env={})
    assert config.marketstore.url == marketstore_url.rstrip("/")
    return path, config


def env_for(sim: SimulatorServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(MASSIVE_WS_SERVER=f"ws://127.0.0.1:{sim.port}", MASSIVE_BASE_URL=sim.url,
               PYTHONUNBUFFERED="1")
    return env


def test_the_plugins_mkts_yml_drives_producer_and_consumer_into_marketstore(
        tmp_path: Path, kafka_bootstrap: str, marketstore_url: str) -> None:
    path, config = mkts_yml(tmp_path, kafka_bootstrap, marketstore_url)
    assert config.massive.symbols == ["AAPL", "SPY"]
    buckets = [f"{s}/{tf}" for s in ("AAPL", "SPY") for tf in ("1Sec/TRADE", "1Min/OHLCV")]
    before = {b: row_count(marketstore_url, b) for b in buckets}
    # few trades: the example's query_start also starts an in-process backfill from 2024
    with SimulatorServer(symbols=["AAPL", "SPY"], trades_per_second=0.5,
                         quotes_per_second=0.5) as sim:
        env = env_for(sim)
        logs = {n: (tmp_path / f"{n}.log").open("wb") for n in ("producer", "consumer")}
        procs = {n: subprocess.Popen([str(BIN / "massive-fetcher"), n, "--config", str(path)],
                                     cwd=ROOT, env=env, stdout=logs[n],
                                     stderr=subprocess.STDOUT) for n in logs}
        try:
            wait_for(lambda: any(c["counts"].get("T", 0) for c in sim.connections()), 120,
                     what="the producer streaming")
            subscribed = {ch for c in sim.connections() for ch in c["subscriptions"]}
            minute = (time.time_ns() // MINUTE_NS - 1) * MINUTE_NS
            assert sim.send_minute(minute) >= 1  # the last whole minute's AM bars
            wait_for(lambda: all(row_count(marketstore_url, b) > before[b] for b in buckets),
                     180, interval_s=1.0, what=f"rows in {buckets}")
            stored = read_bucket(marketstore_url, "AAPL/1Min/OHLCV")
            assert stored is not None and minute // 1_000_000_000 in stored["Epoch"].tolist()
            procs["producer"].send_signal(signal.SIGTERM)
            assert procs["producer"].wait(90) == 0
        finally:
            stop_processes(procs.values())
            for f in logs.values():
                f.close()
    output = (tmp_path / "producer.log").read_text()
    assert "Traceback" not in output and "your_api_key" not in output
    assert subscribed == {"AM.AAPL", "AM.SPY", "T.AAPL", "T.SPY"}  # as data_types says


def test_backfill_dash_config_lands_15min_and_2h_bars_as_the_simulator_serves_them(
        tmp_path: Path, kafka_bootstrap: str, marketstore_url: str) -> None:
    symbol = f"ZDI{uuid.uuid4().hex[:6].upper()}"
    path, config = mkts_yml(tmp_path, kafka_bootstrap, marketstore_url)
    with SimulatorServer(symbols=[symbol], trades_per_second=0.05,
                         quotes_per_second=0.05) as sim:
        done = subprocess.run(
            [str(BIN / "massive-fetcher"), "backfill", "-config", str(path), "-bars",
             "-barFrequencies", "15Min,2H", "-from", "15Min=2024-03-04",
             "-from", "2H=2024-02-04", "-to", "2024-03-06", "-symbols", symbol],
            cwd=ROOT, env=env_for(sim), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        raw15 = rest_results(sim.url, f"/v2/aggs/ticker/{symbol}/range/15/minute/"
                             "2024-03-04/2024-03-06", limit=50000)
        quarter = truth_bars(sim.url, symbol, 15, "minute", "15Min", "2024-03-04",
                             "2024-03-06")
        hours = truth_bars(sim.url, symbol, 2, "hour", "2H", "2024-02-04", "2024-03-06")
    assert len(quarter) > 200 and len(hours) > 360
    consume_into_marketstore(config)
    expected = expected_buckets([("bar", r) for r in quarter + hours])
    assert set(expected) == {f"{symbol}/15Min/OHLCV", f"{symbol}/2H/OHLCV"}
    # MarketStore acknowledges before its WAL is flushed: a new bucket shows up a moment later
    wait_for(lambda: all(read_bucket(marketstore_url, b) is not None for b in expected), 60,
             what="the buckets to be readable")
    assert_buckets_equal(marketstore_url, expected)
    # and field by field against the simulator's own JSON
    stored = read_bucket(marketstore_url, f"{symbol}/15Min/OHLCV")
    assert stored is not None and len(stored) == len(raw15)
    for row, want in zip(stored.tolist(), raw15, strict=True):
        epoch, o, h, low, c, v = row[:6]
        assert (epoch, o, h, low, c, v) == (want["t"] // 1000, want["o"], want["h"], want["l"],
                                            want["c"], want["v"])
    assert read_bucket(marketstore_url, f"{symbol}/1Min/OHLCV") is None


def _backfiller(args: list[str], sim: SimulatorServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "massive_backfiller"), *args, "-baseURL", sim.url],
                          cwd=ROOT, env=env_for(sim), capture_output=True, text=True,
                          timeout=600)


def test_massive_backfiller_runs_the_plugins_two_documented_invocations(
        tmp_path: Path, kafka_bootstrap: str, marketstore_url: str) -> None:
    path, config = mkts_yml(tmp_path, kafka_bootstrap, marketstore_url)
    # one trade every ~17 minutes keeps a year of 1Min bars small
    with SimulatorServer(symbols=["AAPL", "AMZN", "MSFT"], trades_per_second=0.001,
                         quotes_per_second=0.001) as sim:
        bars = _backfiller(["-apiKey", "YOUR_KEY", "-bars", "-barFrequencies", "1Min,1D",
                            "-from", "1Min=2024-01-01", "-from", "1D=2020-01-01",
                            "-to", "2025-01-01", "-symbols", "A*", "-parallelism", "8",
                            "-config", str(path)], sim)
        assert bars.returncode == 0, bars.stderr[-2000:]
        trades = _backfiller(["-apiKey", "YOUR_KEY", "-trades", "-from", "trades=2024-06-01",
                              "-to", "2025-01-01", "-symbols", "AAPL,MSFT",
                              "-config", str(path)], sim)
        assert trades.returncode == 0, trades.stderr[-2000:]
        want_bars: list[dict[str, Any]] = []
        for symbol in ("AAPL", "AMZN"):  # A* in the simulator's universe
            want_bars += truth_bars(sim.url, symbol, 1, "minute", "1Min", "2024-01-01",
                                    "2025-01-01")
            want_bars += truth_bars(sim.url, symbol, 1, "day", "1D", "2020-01-01",
                                    "2025-01-01")
        lo, hi = ny_day("2024-06-01"), ny_day("2025-01-02")  # -to is included
        want_trades = (truth_trades(sim.url, "trade", "AAPL", lo, hi)
                       + truth_trades(sim.url, "trade", "MSFT", lo, hi))
    for done in (bars, trades):
        assert "Traceback" not in done.stderr and "YOUR_KEY" not in done.stdout + done.stderr
        assert "backfill summary" in done.stdout
    got = read_topics(config, ("bar", "trade"))
    assert len(got["bar"]) == len(want_bars) and as_set(got["bar"]) == as_set(want_bars)
    assert {(r["symbol"], r["timeframe"]) for r in got["bar"]} == {
        ("AAPL", "1Min"), ("AAPL", "1D"), ("AMZN", "1Min"), ("AMZN", "1D")}
    assert len(got["trade"]) == len(want_trades) > 10000
    assert as_set(got["trade"]) == as_set(want_trades)


def test_every_accepted_timeframe_is_read_back_from_marketstore_as_written(
        marketstore_url: str) -> None:
    """What the parser accepts is what this MarketStore stores *and* returns from the same
    bucket (it answers a query from its "queryable" timeframe: a 4H query reads 2H)."""
    symbol = f"ZTF{uuid.uuid4().hex[:6].upper()}"
    start_s = 1_707_091_200  # 2024-02-05 00:00 UTC
    written = {}
    for name in STORABLE:
        width = parse_timeframe(name).seconds
        rows = [consumer_buckets.to_row("bar", {
            "symbol": symbol, "source": "backfill", "timeframe": name,
            "start_ns": (start_s + i * width) * 1_000_000_000,
            "end_ns": (start_s + (i + 1) * width) * 1_000_000_000,
            "open": 1.0 + i, "high": 2.0 + i, "low": 0.5, "close": 1.5 + i,
            "volume": 10.0 * (i + 1)})[1] for i in range(3)]
        written[f"{symbol}/{name}/OHLCV"] = consumer_buckets.rows_to_array("OHLCV", rows)
    writer = MarketStoreWriter(marketstore_url)
    try:
        assert writer.write(written) == 3 * len(STORABLE)
    finally:
        writer.close()
    wait_for(lambda: all(read_bucket(marketstore_url, t) is not None for t in written), 60,
             what="every bucket readable")
    for tbk, want in written.items():
        got = read_bucket(marketstore_url, tbk)
        assert got is not None and got["Close"].tolist() == want["Close"].tolist(), tbk
        assert got["Epoch"].tolist() == want["Epoch"].tolist(), tbk
