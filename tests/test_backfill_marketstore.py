"""Backfill and gap repair all the way into MarketStore, compared with the simulator's truth.

Shared servers: unique symbols (MarketStore), unique topics and consumer groups (Kafka).
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from backfill import inprocess
from common.config import Config
from simulator.server import SimulatorServer
from tests.support.backfillrun import KEY, full_config, run_cli
from tests.support.readback import read_topics
from tests.support.testkit import (
    assert_buckets_equal,
    consume_into_marketstore,
    expected_buckets,
    read_bucket,
)
from tests.support.truth import assert_stored_equals_model, ny_day, truth_bars, truth_trades

pytestmark = pytest.mark.integration


def test_backfill_to_marketstore_equals_rest_truth(tmp_path: Path, kafka_bootstrap: str,
                                                   marketstore_url: str) -> None:
    symbol = f"ZBM{uuid.uuid4().hex[:6].upper()}"
    with SimulatorServer(symbols=[symbol], trades_per_second=0.01,
                         quotes_per_second=0.01) as sim:
        config, path = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                   [symbol], ["bars", "trades", "quotes"])
        proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-bars", "-barFrequencies",
                        "1Min,1D", "-from", "1Min=2024-03-05", "-from", "1D=2024-02-01",
                        "-trades", "-from", "trades=2024-03-05", "-quotes", "-from",
                        "quotes=2024-03-05", "-to", "2024-03-05", "-symbols", symbol,
                        "-batchSize", "500", "-config", str(path)])
        assert proc.returncode == 0, proc.stderr[-2000:]
        lo, hi = ny_day("2024-03-05"), ny_day("2024-03-06")
        truth: list[tuple[str, dict[str, Any]]] = []
        truth += [("bar", r) for r in truth_bars(sim.url, symbol, 1, "minute", "1Min",
                                                  "2024-03-05", "2024-03-05")]
        # (no Jan 1 in the daily range: MarketStore v4.1.23 drops a 1D row whose epoch is
        # exactly a UTC year start; that is the server's, not the pipeline's, behaviour)
        truth += [("bar", r) for r in truth_bars(sim.url, symbol, 1, "day", "1D",
                                                  "2024-02-01", "2024-03-05")]
        truth += [("trade", r) for r in truth_trades(sim.url, "trade", symbol, lo, hi)]
        truth += [("quote", r) for r in truth_trades(sim.url, "quote", symbol, lo, hi)]
    consume_into_marketstore(config)
    expected = expected_buckets(truth)
    assert set(expected) == {f"{symbol}/1Min/OHLCV", f"{symbol}/1D/OHLCV",
                             f"{symbol}/1Sec/TRADE", f"{symbol}/1Min/QUOTE"}
    assert_buckets_equal(marketstore_url, expected)
    # nanoseconds survive all the way: the stored SIP timestamps are the REST ones
    trades = read_bucket(marketstore_url, f"{symbol}/1Sec/TRADE")
    assert trades is not None
    assert sorted(trades["SipTimestamp"].tolist()) == sorted(
        r["sip_timestamp_ns"] for k, r in truth if k == "trade")


def test_forced_disconnect_gap_is_repaired_into_marketstore(
        tmp_path: Path, kafka_bootstrap: str, marketstore_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.cli import _attach_inprocess
    from schemas.topics import ensure_topics
    from tests.support.liveproducer import InProcessProducer
    from tests.support.wait import wait_for

    symbol = f"ZBG{uuid.uuid4().hex[:6].upper()}"
    repaired = threading.Event()
    results: list[int] = []
    original = inprocess.repair_gap

    async def observed(config: Config, publisher: Any, gap: Any) -> Any:
        outcome = await original(config, publisher, gap)
        results.append(outcome.records)
        repaired.set()
        return outcome

    # the producer's own wiring (producer.cli) calls backfill.inprocess.repair_gap
    monkeypatch.setattr(inprocess, "repair_gap", observed)
    with SimulatorServer(symbols=[symbol], trades_per_second=25, quotes_per_second=25,
                         seed=11, tick_ms=20) as sim:
        config, _ = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                [symbol], ["trades", "quotes"])
        config = config.replace(massive=dataclasses.replace(
            config.massive, ws_server=f"ws://127.0.0.1:{sim.port}"))
        ensure_topics(config)
        with InProcessProducer(config) as prod:
            _attach_inprocess(prod.session, config, prod.publisher)
            wait_for(lambda: prod.events() >= 40, 20, what="events before the disconnect")
            assert sim.force_disconnect() == [1]
            # stay away long enough that the outage holds events for sure
            wait_for(lambda: prod.session.reconnects >= 1 and prod.session.connected, 20,
                     what="the reconnection")
            assert repaired.wait(60), "gap repair did not run"
            before = prod.events()
            wait_for(lambda: prod.events() >= before + 40, 20, what="events after the repair")
            prod.stop()
        conns = sim.connections()
        assert len(conns) == 2
        first, second = (sim.sent(c["conn"])[0] for c in conns)
        lo = min(w["spans"][0][0] for w in first["windows"])
        hi = min(w["spans"][-1][1] for w in second["windows"])
        (gap,) = prod.session.gaps
        assert results and results[0] > 0
        model = sim.model
        want_trades = model.trades(symbol, lo, hi)
        # the outage really lost events that only the repair can bring back
        live = {(ev["ev"], ev["q"]) for ev in sim.sent_events()}
        outage = [int(q) for q in want_trades.seq.tolist() if ("T", int(q)) not in live]
        assert outage, "nothing was missed: the test proves nothing"
    kafka = read_topics(config, ("trade", "quote"))
    assert any(r["source"] == "backfill" for r in kafka["trade"])
    consume_into_marketstore(config)
    assert_stored_equals_model(marketstore_url, model, symbol, lo, hi)
    assert gap.start_ns < gap.end_ns


def test_parallel_multi_day_trades_land_exactly_once(tmp_path: Path, kafka_bootstrap: str,
                                                     marketstore_url: str) -> None:
    # several windows of one symbol in flight at once: its records reach the partition
    # interleaved across days (and sequence numbers reset at each simulated midnight)
    symbol = f"ZBP{uuid.uuid4().hex[:6].upper()}"
    with SimulatorServer(symbols=[symbol], trades_per_second=0.01,
                         quotes_per_second=0.01) as sim:
        config, path = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                   [symbol], ["trades"])
        proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-trades", "-from",
                        "trades=2024-04-08", "-to", "2024-04-11", "-symbols", symbol,
                        "-batchSize", "100", "-parallelism", "4", "-config", str(path)])
        assert proc.returncode == 0, proc.stderr[-2000:]
        want = truth_trades(sim.url, "trade", symbol, ny_day("2024-04-08"),
                            ny_day("2024-04-12"))
    got = read_topics(config, ("trade",))["trade"]
    days = [r["sip_timestamp_ns"] // 86_400_000_000_000 for r in got]
    assert days != sorted(days), "the windows did not interleave: the test proves nothing"
    consume_into_marketstore(config)
    assert_buckets_equal(marketstore_url, expected_buckets([("trade", r) for r in want]))
