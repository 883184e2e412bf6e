"""In-process backfill and gap repair (what the producer process calls) against the
simulator's REST API and the real Kafka."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from pathlib import Path

import pytest

from backfill.inprocess import repair_gap, run_inprocess_backfill
from backfill.plan import day_start_ns, market_today
from common.config import Config
from producer.gaps import Gap, RepairOutcome
from producer.publisher import Publisher
from schemas.topics import ensure_topics
from simulator.server import SimulatorServer
from tests.support.backfillrun import write_config
from tests.support.readback import read_dead_letters, read_topics
from tests.support.truth import as_set, truth_bars, truth_trades
from tests.support.wait import wait_for_async

pytestmark = pytest.mark.integration

MIN_NS = 60_000_000_000


@pytest.fixture(scope="module")
def sim():
    with SimulatorServer(symbols=["ZBFI1", "ZBFG1", "ZBFG2"], trades_per_second=0.01,
                         quotes_per_second=0.01) as server:
        yield server


def _backfill(config: Config) -> int:
    async def main() -> int:
        publisher = Publisher(config, client_id="bf-inprocess-test")
        await run_inprocess_backfill(config, publisher, asyncio.Event())
        assert publisher.close(30) == 0
        return publisher.produced

    return asyncio.run(main())


def test_inprocess_backfill_to_now_then_resume(sim: SimulatorServer, tmp_path: Path,
                                               kafka_bootstrap: str) -> None:
    today = market_today()
    yesterday = today - dt.timedelta(days=1)
    config, _ = write_config(tmp_path, kafka_bootstrap, sim.url, symbols=["ZBFI1"],
                             data_types=["bars", "trades"],
                             query_start={"1Min": yesterday.isoformat(),
                                          "trades": yesterday.isoformat()})
    ensure_topics(config)
    first = _backfill(config)
    after_first = read_topics(config, ("bar", "trade"))
    now = time.time_ns()
    lo, mid = day_start_ns(yesterday), day_start_ns(today)
    full_day = truth_trades(sim.url, "trade", "ZBFI1", lo, mid)
    trades = after_first["trade"]
    assert len(trades) == first - len(after_first["bar"])
    assert as_set([t for t in trades if t["sip_timestamp_ns"] < mid]) == as_set(full_day)
    # today up to the moment it ran: a prefix of the truth, nothing invented
    todays = as_set([t for t in trades if t["sip_timestamp_ns"] >= mid])
    assert todays <= as_set(truth_trades(sim.url, "trade", "ZBFI1", mid, now + 1))
    bars = truth_bars(sim.url, "ZBFI1", 1, "minute", "1Min", yesterday.isoformat(),
                      yesterday.isoformat())
    assert as_set(bars) <= as_set(after_first["bar"])

    # a restart resumes: yesterday is in the checkpoint, only today is fetched again
    second = _backfill(config)
    after_second = read_topics(config, ("bar", "trade"))
    again_yesterday = [t for t in after_second["trade"] if t["sip_timestamp_ns"] < mid]
    assert len(again_yesterday) == len(full_day)
    total = sum(len(v) for v in after_second.values())
    assert second == total - first < first


def test_inprocess_refuses_wildcards_with_a_pointer_to_the_cli(
        sim: SimulatorServer, tmp_path: Path, kafka_bootstrap: str,
        caplog: pytest.LogCaptureFixture) -> None:
    config, _ = write_config(tmp_path, kafka_bootstrap, sim.url, symbols=["*"],
                             query_start={"trades": "2024-01-02"})
    with caplog.at_level(logging.INFO):
        assert _backfill(config) == 0
    assert "wildcard" in caplog.text and "massive-fetcher backfill" in caplog.text


def test_repair_gap_publishes_the_outage_window(sim: SimulatorServer, tmp_path: Path,
                                                kafka_bootstrap: str) -> None:
    config, _ = write_config(tmp_path, kafka_bootstrap, sim.url, symbols=["ZBFG1", "ZBFG2"],
                             data_types=["bars", "trades", "quotes"])
    ensure_topics(config)
    now = time.time_ns()
    # a gap of the kind producer.session records (both ends included)
    gap = Gap(start_ns=now - 20 * MIN_NS + 123_456_789, end_ns=now - 5 * MIN_NS,
              disconnected_ns=now - 20 * MIN_NS + 200_000_000,
              symbols=("ZBFG1", "ZBFG2"), data_types=("bars", "trades", "quotes"),
              reason="test")

    async def main() -> tuple[int, int]:
        publisher = Publisher(config, client_id="bf-gap-test")
        outcome = await repair_gap(config, publisher, gap)
        assert outcome.unrepairable == ""  # explicit symbols: all of it
        assert publisher.close(30) == 0
        return outcome.records, publisher.produced

    repaired, produced = asyncio.run(main())
    assert repaired == produced > 0
    got = read_topics(config)
    lo_min = gap.start_ns - gap.start_ns % MIN_NS - MIN_NS  # and the minute before
    hi_min = gap.end_ns - gap.end_ns % MIN_NS + MIN_NS
    for symbol in gap.symbols:
        for kind in ("trade", "quote"):
            want = truth_trades(sim.url, kind, symbol, gap.start_ns, gap.end_ns + 1)
            mine = [r for r in got[kind] if r["symbol"] == symbol]
            assert as_set(mine) == as_set(want), (symbol, kind)
        want_bars = truth_bars(sim.url, symbol, 1, "minute", "1Min", str(lo_min // 10**6),
                               str(hi_min // 10**6 - 1))
        mine_bars = [r for r in got["bar"] if r["symbol"] == symbol]
        assert as_set(mine_bars) == as_set(want_bars)
        assert all(lo_min <= b["start_ns"] < hi_min for b in mine_bars)
    assert sum(len(v) for v in got.values()) == repaired


def test_stop_ends_the_inprocess_backfill_and_keeps_finished_windows(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    # a slow, rate-limited API: most windows are still to do when the producer stops
    with SimulatorServer(symbols=["ZBFS1"], trades_per_second=0.01, quotes_per_second=0.01,
                         rest_requests_per_second=3.0) as slow:
        config, _ = write_config(tmp_path, kafka_bootstrap, slow.url, symbols=["ZBFS1"],
                                 data_types=["trades"],
                                 query_start={"trades": "2024-01-02"},
                                 backfill_batch_size=200)
        ensure_topics(config)

        checkpoint = tmp_path / "state" / "backfill" / "backfill-checkpoint.jsonl"

        def a_window_done() -> bool:
            return checkpoint.exists() and bool(checkpoint.read_text().strip())

        async def main() -> float:
            publisher = Publisher(config, client_id="bf-stop-test")
            stop = asyncio.Event()
            task = asyncio.create_task(run_inprocess_backfill(config, publisher, stop))
            await wait_for_async(a_window_done, 60, "a finished window")
            stop.set()
            stopped = time.monotonic()
            await asyncio.wait_for(task, 30)
            assert publisher.close(30) == 0
            return time.monotonic() - stopped

        took = asyncio.run(main())
    assert took < 15  # the grace period, not the hundreds of windows left
    done = [line for line in checkpoint.read_text().splitlines() if line.strip()]
    assert 1 <= len(done) < 100
    got = read_topics(config, ("trade",))["trade"]
    assert len(got) >= sum(int(line.split('"records":')[1].split(",")[0]) for line in done)


def test_a_bad_rest_result_in_a_gap_repair_is_dead_lettered_not_fetched_for_ever(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """A result that can never become a record must not keep its gap pending (fetched
    again at every retry and start): it goes to the dead-letter topic, the rest of the gap
    is repaired, and the outcome counts it for the gap log's marker."""
    # 0.1 trades/s: about 90 in the gap's 15 minutes (0.01 gave as few as 7)
    with SimulatorServer(symbols=["ZBFD1"], trades_per_second=0.1,
                         quotes_per_second=0.01) as bad_sim:
        config, _ = write_config(tmp_path, kafka_bootstrap, bad_sim.url, symbols=["ZBFD1"],
                                 data_types=["trades"])
        ensure_topics(config)
        now = time.time_ns()
        gap = Gap(start_ns=now - 20 * MIN_NS, end_ns=now - 5 * MIN_NS,
                  disconnected_ns=now - 20 * MIN_NS, symbols=("ZBFD1",),
                  data_types=("trades",), reason="test")
        want = truth_trades(bad_sim.url, "trade", "ZBFD1", gap.start_ns, gap.end_ns + 1)
        assert len(want) > 10
        bad = want[len(want) // 2]
        bad_sim.alter("/v3/trades/ZBFD1", {"sequence_number": bad["sequence_number"]},
                      omit=["price"])

        async def main() -> RepairOutcome:
            publisher = Publisher(config, client_id="bf-gap-dlq-test")
            outcome = await repair_gap(config, publisher, gap)
            assert publisher.close(30) == 0
            return outcome

        outcome = asyncio.run(main())
    assert outcome.dead_letters == 1 and outcome.unrepairable == ""
    got = read_topics(config, ("trade",))["trade"]
    assert outcome.records == len(got) == len(want) - 1
    assert as_set(got) == as_set([t for t in want if t is not bad])
    (dead,) = read_dead_letters(config)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert headers["error.reason"] == "mapping" and "price" in headers["error"]
    assert json.loads(dead.value())["sequence_number"] == bad["sequence_number"]
