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
import yaml

from backfill import inprocess
from common.config import Config, ConsumerConfig, MarketStoreConfig, load_config
from simulator.server import SimulatorServer
from tests.support.testkit import (
    ThreadedConsumer,
    assert_buckets_equal,
    expected_buckets,
    read_bucket,
)
from tests.test_backfill_e2e import (
    KEY,
    ny_day,
    read_topics,
    run_cli,
    truth_bars,
    truth_trades,
)

pytestmark = pytest.mark.integration


def full_config(tmp_path: Path, kafka_bootstrap: str, marketstore_url: str, sim_url: str,
                symbols: list[str], data_types: list[str]) -> tuple[Config, Path]:
    tag = f"bfms-{uuid.uuid4().hex[:10]}"
    raw = {
        "massive": {"api_key": KEY, "base_url": sim_url, "symbols": symbols,
                    "data_types": data_types,
                    "ws_server": sim_url.replace("http://", "ws://")},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 2,
                  "topics": {"bars": f"{tag}.bars", "trades": f"{tag}.trades",
                             "quotes": f"{tag}.quotes", "dead_letter": f"{tag}.dlq"},
                  "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}},
        "marketstore": {"url": marketstore_url, "timeout_s": 10.0},
        "consumer": {"group_id": f"{tag}-group", "batch_max_ms": 100, "commit_delay_ms": 300,
                     "retry_initial_s": 0.2, "retry_max_s": 1.0},
        "producer": {"gaps_file": str(tmp_path / "gaps.jsonl"), "gap_repair": True,
                     "reconnect_initial_s": 0.1, "reconnect_max_s": 1.0},
        "metrics": {"enabled": False},
        "services": {"state_dir": str(tmp_path / "state")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, env={})
    assert isinstance(config.consumer, ConsumerConfig)
    assert isinstance(config.marketstore, MarketStoreConfig)
    return config, path


def consume_into_marketstore(config: Config) -> None:
    """Run the consumer until it has caught up with the topics (then it stops)."""
    with ThreadedConsumer(config, until_caught_up=True) as consumer:
        consumer.thread.join(120)
        assert not consumer.thread.is_alive(), "the consumer did not catch up"


def assert_stored_equals_model(url: str, model: Any, symbol: str, lo: int, hi: int) -> None:
    """MarketStore's trades and quotes of ``symbol`` with SIP times in [lo, hi) are the
    simulator model's, row by row: every print once (a live (ms) and a repaired (ns) copy
    of one print are one row), nothing else, same prices, sizes and SIP millisecond.

    The window is narrowed to whole milliseconds, so that a live row (its time cut to the
    millisecond) and the model's event fall on the same side of both edges."""
    ms = 1_000_000
    lo, hi = -(-lo // ms) * ms, hi // ms * ms
    for tbk, want, cols in (
            (f"{symbol}/1Sec/TRADE", model.trades(symbol, lo, hi),
             (("price", "Price"),)),
            (f"{symbol}/1Min/QUOTE", model.quotes(symbol, lo, hi),
             (("bid", "BidPrice"), ("ask", "AskPrice")))):
        stored = read_bucket(url, tbk)
        assert stored is not None, tbk
        in_range = stored[(stored["SipTimestamp"] >= lo) & (stored["SipTimestamp"] < hi)]
        seqs = in_range["SequenceNumber"].tolist()
        assert len(seqs) == len(set(seqs)), f"{tbk}: a print stored twice"
        want_seq = want.seq.tolist()
        assert sorted(seqs) == sorted(want_seq), (
            f"{tbk}: {len(set(want_seq) - set(seqs))} missing, "
            f"{len(set(seqs) - set(want_seq))} unexpected")
        for model_col, stored_col in cols:
            by_seq = dict(zip(want_seq, getattr(want, model_col).tolist(), strict=True))
            assert all(by_seq[int(q)] == v for q, v in zip(
                seqs, in_range[stored_col].tolist(), strict=True)), (tbk, stored_col)
        if tbk.endswith("TRADE"):
            size = dict(zip(want_seq, (want.size_e4 / 10_000).tolist(), strict=True))
            assert all(size[int(q)] == v for q, v in zip(
                seqs, in_range["Size"].tolist(), strict=True)), (tbk, "Size")
        sip_ms = dict(zip(want_seq, (want.sip // 1_000_000).tolist(), strict=True))
        assert all(sip_ms[int(q)] == int(t) // 1_000_000 for q, t in zip(
            seqs, in_range["SipTimestamp"].tolist(), strict=True))


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
    from tests.test_producer_live import InProcessProducer, wait_until

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
            wait_until(lambda: prod.events() >= 40, what="events before the disconnect")
            assert sim.force_disconnect() == [1]
            # stay away long enough that the outage holds events for sure
            wait_until(lambda: prod.session.reconnects >= 1 and prod.session.connected,
                       what="the reconnection")
            assert repaired.wait(60), "gap repair did not run"
            before = prod.events()
            wait_until(lambda: prod.events() >= before + 40, what="events after the repair")
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
