"""Durable gap repair: gaps a run left unrepaired are repaired at the next start, once.

The file format is unit-tested without a network; the resume is tested against the real
Kafka and the simulator (its REST API serves the model's truth for any past window).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from backfill import inprocess
from common.config import (
    Config,
    KafkaConfig,
    MassiveConfig,
    MetricsConfig,
    ProducerConfig,
    TopicsConfig,
)
from producer.cli import _attach_inprocess
from producer.gaps import Gap, gap_id, parse_gap_log, read_gap_log, read_gaps
from producer.session import ProducerSession
from schemas.topics import ensure_topics
from simulator.server import SimulatorServer
from tests.support.liveproducer import KEY, InProcessProducer
from tests.support.readback import read_topics
from tests.support.truth import key_of, truth_trades
from tests.support.wait import wait_for, wait_for_async

S = 1_000_000_000


# -- the file format (pure) -----------------------------------------------------------

def _old_line(start: int, end: int) -> dict[str, Any]:
    """A gap line as written before gaps had ids."""
    return {"start_ns": start, "end_ns": end, "disconnected_ns": start + 5,
            "symbols": ["AAPL"], "data_types": ["trades"], "reason": "old", "attempts": 1}


def test_gap_ids_are_stable_and_derived_for_old_lines() -> None:
    gap = Gap(start_ns=10, end_ns=20, disconnected_ns=11, symbols=("A",),
              data_types=("trades",), reason="r")
    assert gap.id == gap_id(10, 20) == "10-20"
    assert gap.as_dict()["id"] == "10-20"
    assert Gap.from_dict(gap.as_dict()) == gap
    assert Gap.from_dict(_old_line(10, 20)).id == "10-20"
    assert Gap.from_dict({**_old_line(10, 20), "id": "custom"}).id == "custom"


def test_parse_gap_log_old_lines_markers_and_torn_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    lines = [
        orjson.dumps(_old_line(1, 2)).decode(),               # old format, no id
        orjson.dumps(_old_line(3, 4)).decode(),
        orjson.dumps({"repaired": "1-2", "records": 7, "at_ns": 99}).decode(),
        "",
        orjson.dumps({**_old_line(5, 6), "id": "g5"}).decode(),
        orjson.dumps(_old_line(3, 4)).decode(),               # the same gap twice: once
        orjson.dumps({"repaired": "unknown", "records": 0, "at_ns": 1}).decode(),
        '{"start_ns": 8, "end_',                              # torn by a crash
    ]
    with caplog.at_level(logging.WARNING):
        gap_log = parse_gap_log("\n".join(lines) + "\n", "gaps.jsonl")
    assert [g.id for g in gap_log.gaps] == ["1-2", "3-4", "g5"]
    assert gap_log.repaired["1-2"]["records"] == 7
    assert [g.id for g in gap_log.pending] == ["3-4", "g5"]
    assert gap_log.bad_lines == 1
    assert "gaps.jsonl line 8" in caplog.text


def test_read_gaps_pending_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    assert read_gaps(path) == [] and read_gaps(path, pending=True) == []
    path.write_text(orjson.dumps(_old_line(1, 2)).decode() + "\n"
                    + orjson.dumps(_old_line(3, 4)).decode() + "\n"
                    + orjson.dumps({"repaired": "3-4", "records": 1, "at_ns": 5}).decode()
                    + "\n")
    assert [g.id for g in read_gaps(path)] == ["1-2", "3-4"]
    assert [g.id for g in read_gaps(path, pending=True)] == ["1-2"]


def test_gap_repairs_run_one_at_a_time(tmp_path: Path) -> None:
    """A flapping connection records a gap per drop; their repairs must not pile up in
    parallel (each is REST and Kafka load while the live stream is already behind).
    Drives the session's gap bookkeeping directly, without a network."""
    config = Config(massive=MassiveConfig(api_key=KEY, symbols=["ZGRONE"],
                                          data_types=["trades"]),  # type: ignore[arg-type]
                    producer=ProducerConfig(gaps_file=str(tmp_path / "gaps.jsonl")))
    session = ProducerSession(config, publisher=None)  # type: ignore[arg-type]
    running = most = 0
    done: list[str] = []

    async def repair(g: Gap) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.append(g.id)
        return 1

    async def main() -> None:
        session.set_gap_repair(repair)
        for _ in range(3):
            session._open_gap("flap")
            await asyncio.sleep(0.002)
            session._close_gap(time.time_ns())
        await wait_for_async(lambda: len(done) == 3, 10, "the three repairs")
        await session._stop_tasks()

    asyncio.run(main())
    assert sorted(done) == sorted(g.id for g in session.gaps) and len(done) == 3
    assert most == 1
    assert read_gap_log(config.producer.gaps_file).pending == []


# -- against Kafka and the simulator --------------------------------------------------

@pytest.fixture
def sim_symbols() -> list[str]:
    tag = uuid.uuid4().hex[:5].upper()
    return [f"ZGR{tag}A", f"ZGR{tag}B"]


@pytest.fixture
def sim(sim_symbols: list[str]) -> Iterator[SimulatorServer]:
    with SimulatorServer(symbols=sim_symbols, trades_per_second=20, quotes_per_second=20,
                         seed=5, tick_ms=20) as server:
        yield server


def make_config(kafka_bootstrap: str, sim: SimulatorServer, symbols: list[str],
                tmp_path: Path) -> Config:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicsConfig(bars=f"test-gapresume-bars-{suffix}",
                          trades=f"test-gapresume-trades-{suffix}",
                          quotes=f"test-gapresume-quotes-{suffix}",
                          dead_letter=f"test-gapresume-dlq-{suffix}")
    return Config(
        massive=MassiveConfig(api_key=KEY, ws_server=f"ws://127.0.0.1:{sim.port}",
                              base_url=sim.url, symbols=list(symbols),
                              data_types=["trades", "quotes"]),  # type: ignore[arg-type]
        kafka=KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=topics, partitions=2),
        # these tests count the repairs of the gaps they write; the downtime between
        # their runs is tested in test_producer_promise.py
        producer=ProducerConfig(reconnect_initial_s=0.1, reconnect_max_s=1.0,
                                gaps_file=str(tmp_path / "gaps.jsonl"), gap_repair=True,
                                kafka_wait_s=10.0, repair_downtime=False),
        metrics=MetricsConfig(producer_port=0))


def write_pending_gap(config: Config, gap: Gap, with_id: bool = False) -> None:
    line = gap.as_dict()
    if not with_id:
        del line["id"]  # as an older producer wrote it
    with open(config.producer.gaps_file, "ab") as f:
        f.write(orjson.dumps(line) + b"\n")


class CountingRepair:
    """Wraps the real ``repair_gap`` (what producer.cli wires in) to count its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.done = threading.Event()
        self._real = inprocess.repair_gap

    async def __call__(self, config: Config, publisher: Any, gap: Any) -> Any:
        self.calls.append(gap.id)
        outcome = await self._real(config, publisher, gap)
        self.done.set()
        return outcome


def run_producer(config: Config, until: Any, what: str) -> InProcessProducer:
    prod = InProcessProducer(config)
    # wired before run(), as producer.cli does
    _attach_inprocess(prod.session, config, prod.publisher)
    with prod:
        wait_for(lambda: prod.session.connected and prod.events() > 0, timeout_s=30,
                 what="the live stream")
        wait_for(until, timeout_s=60, what=what)
        assert prod.stop() == 0
    return prod


def in_window(records: list[dict[str, Any]], gap: Gap) -> list[dict[str, Any]]:
    return [r for r in records if gap.start_ns <= r["sip_timestamp_ns"] <= gap.end_ns]


def test_pending_gap_of_an_earlier_run_is_repaired_once(
        sim: SimulatorServer, sim_symbols: list[str], tmp_path: Path, kafka_bootstrap: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config(kafka_bootstrap, sim, sim_symbols, tmp_path)
    ensure_topics(config)
    now = time.time_ns()
    gap = Gap(start_ns=now - 90 * S + 123_457, end_ns=now - 86 * S,
              disconnected_ns=now - 90 * S + 1_000_000, symbols=tuple(sim_symbols),
              data_types=("trades", "quotes"), reason="crashed before the repair")
    write_pending_gap(config, gap)
    assert [g.id for g in read_gaps(config.producer.gaps_file, pending=True)] == [gap.id]
    counter = CountingRepair()
    monkeypatch.setattr(inprocess, "repair_gap", counter)

    first = run_producer(config, lambda: bool(read_gap_log(
        config.producer.gaps_file).repaired), "the repaired marker")
    assert counter.calls == [gap.id]
    assert first.session.gaps_repaired == 1 and not first.session.gaps
    gap_log = read_gap_log(config.producer.gaps_file)
    assert gap_log.pending == [] and list(gap_log.repaired) == [gap.id]

    after_first = read_topics(config, ("trade", "quote"))
    total = 0
    for kind in ("trade", "quote"):
        got = in_window(after_first[kind], gap)
        assert all(r["source"] == "backfill" for r in got)
        for symbol in sim_symbols:
            mine = [r for r in got if r["symbol"] == symbol]
            # the model's truth, through the simulator's REST API and the backfill mapping
            want = truth_trades(sim.url, kind, symbol, gap.start_ns, gap.end_ns + 1)
            model = (sim.model.trades if kind == "trade" else sim.model.quotes)(
                symbol, gap.start_ns, gap.end_ns + 1)
            assert len(want) == len(model) > 0, (symbol, kind)
            assert sorted(r["sequence_number"] for r in mine) == sorted(
                model.seq.tolist()), (symbol, kind)
            counts = Counter(key_of(r) for r in mine)
            assert max(counts.values()) == 1, f"{symbol} {kind}: a record twice"
            assert set(counts) == {key_of(r) for r in want}, (symbol, kind)
            total += len(mine)
    assert gap_log.repaired[gap.id]["records"] == total

    # the next start finds nothing pending: no second repair, no new backfill records
    counter.calls.clear()
    second = run_producer(config, lambda: True, "nothing")
    assert counter.calls == [] and second.session.gaps_repaired == 0
    after_second = read_topics(config, ("trade", "quote"))
    for kind in ("trade", "quote"):
        assert Counter(map(key_of, in_window(after_second[kind], gap))) == Counter(
            map(key_of, in_window(after_first[kind], gap)))
        assert sum(r["source"] == "backfill" for r in after_second[kind]) == sum(
            r["source"] == "backfill" for r in after_first[kind])
    assert read_gap_log(config.producer.gaps_file).repaired.keys() == {gap.id}


def test_failed_repair_stays_pending_and_is_logged(
        sim: SimulatorServer, sim_symbols: list[str], tmp_path: Path, kafka_bootstrap: str,
        caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(kafka_bootstrap, sim, sim_symbols, tmp_path)
    # REST is unreachable (nothing listens there); the live stream is fine
    config = config.replace(massive=dataclasses.replace(
        config.massive, base_url="http://127.0.0.1:9"))
    ensure_topics(config)
    now = time.time_ns()
    gap = Gap(start_ns=now - 60 * S, end_ns=now - 59 * S, disconnected_ns=now - 60 * S,
              symbols=(sim_symbols[0],), data_types=("trades",), reason="test")
    write_pending_gap(config, gap, with_id=True)
    seen: list[Gap] = []

    async def failing(g: Gap) -> int:
        seen.append(g)
        raise ConnectionError("REST is down")

    prod = InProcessProducer(config)
    prod.session.set_gap_repair(failing)
    with caplog.at_level(logging.WARNING), prod:
        wait_for(lambda: prod.session.gap_repairs_failed == 1, 20, what="the failed repair")
        # the live stream was not held up by it
        wait_for(lambda: prod.events() > 0, 20, what="live events")
        assert prod.stop() == 0
    assert seen and all(g == gap for g in seen)  # tried, perhaps retried, never marked
    assert read_gaps(config.producer.gaps_file, pending=True) == [gap]
    assert "gap repair failed; the gap stays pending" in caplog.text
    assert "REST is down" in caplog.text


def test_live_gap_is_marked_and_a_repair_cut_off_by_stop_stays_pending(
        sim: SimulatorServer, sim_symbols: list[str], tmp_path: Path,
        kafka_bootstrap: str) -> None:
    config = make_config(kafka_bootstrap, sim, sim_symbols, tmp_path)
    ensure_topics(config)
    repaired: list[Gap] = []
    block = True
    started = threading.Event()

    async def repair(g: Gap) -> int:
        started.set()
        while block:  # a repair still running when the producer stops
            await asyncio.sleep(0.05)
        repaired.append(g)
        return 42

    # run 1: a live disconnect; the repair finishes and is marked in the file
    block = False
    prod = InProcessProducer(config)
    prod.session.set_gap_repair(repair)
    with prod:
        wait_for(lambda: prod.events() >= 20, 20, what="events before the disconnect")
        assert sim.force_disconnect()
        wait_for(lambda: prod.session.gaps_repaired == 1, 20, what="the live gap repaired")
        assert prod.stop() == 0
    (live_gap,) = prod.session.gaps
    assert repaired == [live_gap]
    gap_log = read_gap_log(config.producer.gaps_file)
    assert gap_log.pending == [] and gap_log.repaired[live_gap.id]["records"] == 42

    # run 2: an old pending gap whose repair is still running at the stop stays pending
    now = time.time_ns()
    old = Gap(start_ns=now - 30 * S, end_ns=now - 29 * S, disconnected_ns=now - 30 * S,
              symbols=(sim_symbols[0],), data_types=("trades",), reason="test")
    write_pending_gap(config, old)
    block, started = True, threading.Event()
    prod = InProcessProducer(config)
    prod.session.set_gap_repair(repair)
    with prod:
        assert started.wait(20), "the pending gap was not picked up"
        wait_for(lambda: prod.events() > 0, 20, what="live events beside the repair")
        assert prod.stop() == 0
    assert read_gaps(config.producer.gaps_file, pending=True) == [old]

    # run 3: picked up again and finished
    block = False
    prod = InProcessProducer(config)
    prod.session.set_gap_repair(repair)
    with prod:
        wait_for(lambda: prod.session.gaps_repaired == 1, 20, what="the resumed repair")
        assert prod.stop() == 0
    assert repaired == [live_gap, old]
    assert read_gaps(config.producer.gaps_file, pending=True) == []
