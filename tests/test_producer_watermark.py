"""The producer's promise, pure parts: the watermark file, the downtime gaps it yields,
what a wildcard gap repair can and cannot cover, the gap log's markers, and failed
deliveries turned into gaps. No network except an unreachable broker address."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from backfill.inprocess import repair_targets
from common.config import Config, KafkaConfig, MassiveConfig, ProducerConfig, TopicsConfig
from producer.gaps import Gap, RepairOutcome, parse_gap_log, read_gap_log
from producer.mapping import record_from_ws_event
from producer.publisher import Publisher
from producer.session import ProducerSession
from producer.watermark import (
    Watermark,
    downtime_gaps,
    read_watermark,
    watermark_path,
    write_watermark,
)
from tests.support.wait import wait_for_async

S = 1_000_000_000


def _mark(clean: bool = False, **acked: int) -> Watermark:
    return Watermark(acked_ns=acked, symbols=("AAPL",), seen={}, clean_stop=clean,
                     written_ns=50 * S)


def test_watermark_file_round_trip_atomic_and_unreadable(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    path = watermark_path(tmp_path / "gaps.jsonl")
    assert path == tmp_path / "gaps.jsonl.watermark"
    assert read_watermark(path) is None  # first start
    mark = Watermark(acked_ns={"trades": 5, "bars": 3}, symbols=("*",),
                     seen={"trades": ("A", "B")}, clean_stop=True, written_ns=9)
    assert write_watermark(path, mark)
    assert read_watermark(path) == mark
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
    path.write_text('{"acked_ns": ')
    assert read_watermark(path) is None
    assert "not readable" in caplog.text


def test_downtime_after_a_crash_is_one_gap_per_distinct_start() -> None:
    mark = _mark(trades=100 * S, quotes=100 * S, bars=60 * S)
    gaps = downtime_gaps(mark, 200 * S, ("AAPL", "MSFT"), ("bars", "trades", "quotes"),
                         repair_clean_stop=False)
    assert [(g.start_ns, g.end_ns, g.data_types) for g in gaps] == [
        (60 * S, 200 * S, ("bars",)), (100 * S, 200 * S, ("trades", "quotes"))]
    assert all(g.reason.startswith("producer down: the previous run ended without a "
                                   "clean stop") for g in gaps)
    assert all(g.symbols == ("AAPL", "MSFT") and g.attempts == 0 for g in gaps)
    assert len({g.id for g in gaps}) == 2


def test_downtime_after_a_clean_stop_follows_the_flag_and_skips_new_types() -> None:
    mark = _mark(clean=True, trades=100 * S)
    (gap,) = downtime_gaps(mark, 200 * S, ("AAPL",), ("trades", "quotes"),
                           repair_clean_stop=True)
    # quotes were not streamed before: nothing was promised for them
    assert gap.data_types == ("trades",) and gap.start_ns == 100 * S
    assert gap.reason == "producer down between a clean stop and this start"
    assert downtime_gaps(mark, 200 * S, ("AAPL",), ("trades",),
                         repair_clean_stop=False) == []
    # a watermark at or after the new subscription leaves nothing to repair
    assert downtime_gaps(_mark(trades=300 * S), 200 * S, ("AAPL",), ("trades",),
                         repair_clean_stop=True) == []


def test_downtime_of_a_wildcard_run_carries_the_symbols_it_saw() -> None:
    mark = Watermark(acked_ns={"trades": 1 * S, "quotes": 1 * S}, symbols=("*",),
                     seen={"trades": ("A", "B"), "quotes": ("A",)}, clean_stop=False,
                     written_ns=2 * S)
    (gap,) = downtime_gaps(mark, 3 * S, ("*",), ("trades", "quotes"), True)
    assert gap.seen == {"trades": ("A", "B"), "quotes": ("A",)}
    assert Gap.from_dict(orjson.loads(orjson.dumps(gap.as_dict()))) == gap


def test_repair_targets_explicit_wildcard_and_never_seen() -> None:
    targets, why = repair_targets(["AAPL", "MSFT"], ["trades", "bars"], {})
    assert targets == {"trades": ["AAPL", "MSFT"], "bars": ["AAPL", "MSFT"]} and why == ""
    targets, why = repair_targets(["*"], ["trades", "quotes", "bars"],
                                  {"trades": ("B", "A"), "quotes": ("A",)})
    assert targets == {"trades": ["A", "B"], "quotes": ["A"], "bars": []}
    assert why.startswith("wildcard subscription *: repaired only for the symbols seen "
                          "streaming before the gap (trades 2, quotes 1, bars 0)")
    assert "never streamed" in why
    # a glob names only what it matches; explicit symbols next to it are always repaired
    targets, why = repair_targets(["A*", "ZZ"], ["trades"], {"trades": ("AB", "ZZ", "Q")})
    assert targets == {"trades": ["AB", "ZZ"]} and "A*" in why


def test_gap_log_unrepairable_marker_is_not_pending_and_not_repaired() -> None:
    gap = Gap(start_ns=1, end_ns=2, disconnected_ns=1, symbols=("*",),
              data_types=("trades",), reason="r", seen={"trades": ("A",)})
    lines = [gap.as_dict(),
             {"unrepairable": gap.id, "reason": "wildcard", "records": 3,
              "repaired_symbols": {"trades": ["A"]}, "at_ns": 5}]
    gap_log = parse_gap_log("\n".join(orjson.dumps(x).decode() for x in lines))
    assert gap_log.gaps == [gap] and gap_log.pending == []
    assert gap_log.repaired == {} and gap_log.unrepairable[gap.id]["records"] == 3


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(ev: str, sym: str, t_ms: int, i: int) -> dict[str, Any]:
    if ev == "T":
        return {"ev": "T", "sym": sym, "i": str(i), "x": 4, "p": 10.0, "s": 100,
                "t": t_ms, "q": i}
    return {"ev": "Q", "sym": sym, "bx": 1, "bp": 9.9, "bs": 1, "ax": 2, "ap": 10.1,
            "as": 1, "t": t_ms, "q": i}


def test_failed_deliveries_become_one_gap_per_data_type(tmp_path: Path) -> None:
    """Kafka unreachable and a finite message.timeout.ms: the failed records' event-time
    range per data type becomes a gap once failures stop arriving, and the watermark does
    not pass them before that."""
    suffix = str(time.time_ns())
    config = Config(
        massive=MassiveConfig(api_key="k", symbols=["AAPL", "MSFT"],
                              data_types=["trades", "quotes"]),  # type: ignore[list-item]
        kafka=KafkaConfig(bootstrap_servers=f"127.0.0.1:{_unused_port()}",
                          topics=TopicsConfig(trades=f"t-{suffix}", quotes=f"q-{suffix}"),
                          producer={"message.timeout.ms": 500}),
        producer=ProducerConfig(gaps_file=str(tmp_path / "gaps.jsonl")))
    pub = Publisher(config)
    session = ProducerSession(config, pub)
    base = 1_704_205_800_000
    for i, (ev, sym) in enumerate([("T", "AAPL"), ("T", "MSFT"), ("Q", "AAPL"),
                                   ("T", "AAPL"), ("Q", "AAPL")]):
        pub.publish(*record_from_ws_event(_event(ev, sym, base + 10 * i, i), 1))
    assert pub.flush(10) == 0 and pub.failed == 5
    session._acked = {"trades": 0, "quotes": 0}
    session._newest = {"trades": base * 10**6 + 30_000_000, "quotes": base * 10**6}
    session._mark_acknowledged()
    assert session._acked == {"trades": 0, "quotes": 0}  # failures not yet gaps
    session._record_failures()  # new failures since the last tick: keep gathering
    assert session.gaps == []

    session._record_failures()  # none since: settled, recorded (no repair wired)
    by_type = {g.data_types: g for g in session.gaps}
    ms = 1_000_000
    assert set(by_type) == {("trades",), ("quotes",)}
    trades, quotes = by_type[("trades",)], by_type[("quotes",)]
    # the end reaches to the last failed record's millisecond's end: the REST copy of a
    # print carries nanoseconds the live one rounded away
    assert (trades.start_ns, trades.end_ns) == (base * ms, (base + 31) * ms - 1)
    assert trades.symbols == ("AAPL", "MSFT") and quotes.symbols == ("AAPL",)
    assert (quotes.start_ns, quotes.end_ns) == ((base + 20) * ms, (base + 41) * ms - 1)
    assert trades.reason.startswith("Kafka did not acknowledge 3 record(s)")
    assert read_gap_log(config.producer.gaps_file).pending == session.gaps
    session._mark_acknowledged()
    assert session._acked["trades"] == base * ms + 30 * ms  # now it may move
    pub.close(0.1)


def test_repair_outcome_marks_unrepairable_never_repaired(tmp_path: Path) -> None:
    config = Config(massive=MassiveConfig(api_key="k", symbols=["*"],
                                          data_types=["trades"]),  # type: ignore[list-item]
                    producer=ProducerConfig(gaps_file=str(tmp_path / "gaps.jsonl")))
    session = ProducerSession(config, publisher=None)  # type: ignore[arg-type]
    gap = Gap(start_ns=1, end_ns=2, disconnected_ns=1, symbols=("*",),
              data_types=("trades",), reason="r", seen={"trades": ("A",)})

    async def repair(g: Gap) -> RepairOutcome:
        return RepairOutcome(7, "some cannot", {"trades": ["A"]})

    async def main() -> None:
        session.set_gap_repair(repair)
        session._record_gap(gap)
        await wait_for_async(lambda: session.gaps_unrepairable, 10, "the repair's outcome")
        await session._stop_tasks()

    asyncio.run(main())
    gap_log = read_gap_log(config.producer.gaps_file)
    assert gap_log.repaired == {} and gap_log.pending == []
    marker = gap_log.unrepairable[gap.id]
    assert marker["reason"] == "some cannot" and marker["records"] == 7
    assert marker["repaired_symbols"] == {"trades": ["A"]}
    assert session.gaps_unrepairable == 1 and session.gaps_repaired == 0
