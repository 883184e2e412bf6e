"""Unit tests of the pure backfill parts: mapping, planning, symbols, URL handling."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from backfill.client import parse_retry_after, path_and_query, strip_api_key
from backfill.mapping import (
    MappingError,
    bar_end_ns,
    bar_from_rest,
    quote_from_rest,
    trade_from_rest,
)
from backfill.plan import day_start_ns, gap_windows, plan_windows, request_for
from backfill.symbols import glob_prefix, is_glob, match_glob, split_symbols

NS = 1_000_000_000


def test_bar_from_rest_scales_ms_and_keeps_fields() -> None:
    r = {"v": 642646396.0, "vw": 1.469, "o": 1.5032, "c": 1.4604, "h": 1.5064, "l": 1.4489,
         "t": 1704205800000, "n": 82132}
    bar = bar_from_rest(r, "AAPL", "1Min")
    assert bar["start_ns"] == 1704205800000 * 1_000_000
    assert bar["end_ns"] - bar["start_ns"] == 60 * NS
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (1.5032, 1.5064, 1.4489,
                                                                      1.4604)
    assert bar["volume"] == 642646396.0 and bar["vwap"] == 1.469 and bar["trades"] == 82132
    assert bar["source"] == "backfill" and bar["received_ns"] is None and bar["otc"] is False
    assert bar_from_rest({**r, "otc": True}, "X", "5Min")["otc"] is True
    assert bar_from_rest(r, "X", "1H")["end_ns"] - bar["start_ns"] == 3600 * NS


def test_daily_bar_ends_at_next_new_york_midnight_across_dst() -> None:
    # 2024-03-10 is the spring-forward day: 23 hours; 2024-11-03 falls back: 25 hours
    spring = day_start_ns(dt.date(2024, 3, 10))
    assert bar_end_ns(spring, "1D") - spring == 23 * 3600 * NS
    assert bar_end_ns(spring, "1D") == day_start_ns(dt.date(2024, 3, 11))
    fall = day_start_ns(dt.date(2024, 11, 3))
    assert bar_end_ns(fall, "1D") - fall == 25 * 3600 * NS
    normal = day_start_ns(dt.date(2024, 1, 2))
    assert normal == 1704171600 * NS  # 05:00 UTC
    bar = bar_from_rest({"o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "t": normal // 10**6},
                        "AAPL", "1D")
    assert bar["end_ns"] == day_start_ns(dt.date(2024, 1, 3))
    assert bar["vwap"] is None and bar["trades"] is None


def test_trade_from_rest_keeps_ns_and_prefers_decimal_size() -> None:
    r = {"conditions": [12, 37], "correction": 1, "exchange": 11, "id": "183276",
         "participant_timestamp": 1651181822461636600, "price": 156.43,
         "sequence_number": 7179341, "sip_timestamp": 1651181822461979400, "size": 10,
         "tape": 3, "trf_id": 3, "trf_timestamp": 1651181557090806500}
    t = trade_from_rest(r, "AAPL")
    assert t["sip_timestamp_ns"] == 1651181822461979400
    assert t["participant_timestamp_ns"] == 1651181822461636600
    assert t["trf_timestamp_ns"] == 1651181557090806500
    assert t["size"] == 10.0 and t["conditions"] == [12, 37] and t["id"] == "183276"
    assert t["correction"] == 1 and t["trf_id"] == 3 and t["tape"] == 3
    assert t["source"] == "backfill"
    t2 = trade_from_rest({**r, "decimal_size": "10.5"}, "AAPL")
    assert t2["size"] == 10.5
    bare = {k: r[k] for k in ("exchange", "id", "price", "sequence_number", "sip_timestamp",
                              "size")}
    t3 = trade_from_rest(bare, "AAPL")
    assert t3["conditions"] == [] and t3["correction"] is None and t3["tape"] is None
    with pytest.raises(MappingError):
        trade_from_rest({**bare, "price": None}, "AAPL")
    with pytest.raises(MappingError):
        trade_from_rest({k: v for k, v in bare.items() if k != "sip_timestamp"}, "AAPL")


def test_quote_from_rest() -> None:
    r = {"ask_exchange": 12, "ask_price": 10.5, "ask_size": 300, "bid_exchange": 11,
         "bid_price": 10.4, "bid_size": 200, "conditions": [1], "indicators": [604],
         "participant_timestamp": 1704205800000000001, "sequence_number": 5,
         "sip_timestamp": 1704205800000000123, "tape": 3}
    q = quote_from_rest(r, "MSFT")
    assert q["sip_timestamp_ns"] == 1704205800000000123
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == (10.4, 200.0,
                                                                              10.5, 300.0)
    assert q["conditions"] == [1] and q["indicators"] == [604] and q["trf_timestamp_ns"] is None
    q2 = quote_from_rest({k: v for k, v in r.items() if k not in ("conditions", "indicators")},
                         "MSFT")
    assert q2["conditions"] == [] and q2["indicators"] == []
    # a one-sided quote: the missing price is NaN (never 0.0), a missing size 0
    for absent in ({"bid_price", "bid_size"}, {"bid_price"}):
        for one_sided in ({k: v for k, v in r.items() if k not in absent},
                          {**r, **dict.fromkeys(absent)}):
            q3 = quote_from_rest(one_sided, "MSFT")
            assert math.isnan(q3["bid_price"]) and q3["ask_price"] == 10.5
            assert q3["bid_size"] == (0.0 if "bid_size" in absent else 200.0)
    q4 = quote_from_rest({k: v for k, v in r.items() if k not in ("ask_price", "ask_size")},
                         "MSFT")
    assert math.isnan(q4["ask_price"]) and q4["ask_size"] == 0.0 and q4["bid_price"] == 10.4
    with pytest.raises(MappingError):
        quote_from_rest({**r, "bid_price": "n/a"}, "MSFT")


def test_plan_bars_fit_the_limit_and_ids_are_stable() -> None:
    ws = plan_windows("AAPL", "bars", dt.date(2024, 1, 1), dt.date(2024, 3, 31), "1Min",
                      limit=50000)
    assert all((w.end_ns - w.start_ns) <= 34 * 86400 * NS + 3600 * NS for w in ws)
    assert ws[0].start_ns == day_start_ns(dt.date(2024, 1, 1))
    assert ws[-1].end_ns == day_start_ns(dt.date(2024, 4, 1))
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(ws))
    assert ws[0].id == "bars/1Min/AAPL/2024-01-01..2024-02-03"
    again = plan_windows("AAPL", "bars", dt.date(2024, 1, 1), dt.date(2024, 3, 31), "1Min")
    assert [w.id for w in again] == [w.id for w in ws]
    daily = plan_windows("AAPL", "bars", dt.date(2000, 1, 1), dt.date(2024, 1, 1), "1D")
    assert len(daily) == 1
    small = plan_windows("AAPL", "bars", dt.date(2024, 1, 1), dt.date(2024, 1, 3), "1Min",
                         limit=100)
    assert [w.label for w in small] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert plan_windows("AAPL", "trades", dt.date(2024, 1, 3), dt.date(2024, 1, 2)) == []


def test_plan_trades_one_day_each_and_request_shapes() -> None:
    ws = plan_windows("MSFT", "trades", dt.date(2024, 1, 2), dt.date(2024, 1, 3))
    assert [w.id for w in ws] == ["trades/-/MSFT/2024-01-02", "trades/-/MSFT/2024-01-03"]
    path, params = request_for(ws[0], 100, True)
    assert path == "/v3/trades/MSFT"
    assert params["timestamp.gte"] == str(day_start_ns(dt.date(2024, 1, 2)))
    assert params["timestamp.lt"] == str(day_start_ns(dt.date(2024, 1, 3)))
    assert params["limit"] == "100" and params["order"] == "asc"
    bars = plan_windows("AAPL", "bars", dt.date(2024, 1, 2), dt.date(2024, 1, 2), "5Min")
    path, params = request_for(bars[0], 10**6, False)
    assert path == "/v2/aggs/ticker/AAPL/range/5/minute/2024-01-02/2024-01-02"
    assert params == {"adjusted": "false", "sort": "asc", "limit": "50000"}
    with pytest.raises(ValueError):
        plan_windows("AAPL", "bars", dt.date(2024, 1, 2), dt.date(2024, 1, 2), "7Min")


def test_gap_windows_cover_the_interval() -> None:
    start, end = 1704205805_123456789, 1704205925_000000001
    ws = {w.data_type: w for w in gap_windows("AAPL", ["bars", "trades", "quotes"], start, end)}
    assert ws["trades"].start_ns == start and ws["trades"].end_ns == end + 1
    # from the minute before the gap's: its AM bar may not have arrived before the drop
    assert ws["bars"].start_ns == 1704205740 * NS and ws["bars"].end_ns == 1704205980 * NS
    assert ws["bars"].timeframe == "1Min"
    # a minute still running is left to the live stream
    cut = {w.data_type: w for w in gap_windows("AAPL", ["bars"], start, end,
                                               now_ns=1704205950 * NS)}
    assert cut["bars"].end_ns == 1704205920 * NS
    (early,) = gap_windows("AAPL", ["bars"], start, end, now_ns=1704205810 * NS)
    assert (early.start_ns, early.end_ns) == (1704205740 * NS, 1704205800 * NS)
    assert gap_windows("AAPL", ["bars"], start, end, now_ns=1704205750 * NS) == []
    path, _ = request_for(ws["bars"], 50000, True)
    assert path == "/v2/aggs/ticker/AAPL/range/1/minute/1704205740000/1704205979999"


def test_symbols() -> None:
    assert split_symbols(" aapl,MSFT,,AAPL ") == ["AAPL", "MSFT"]
    assert is_glob("A*") and not is_glob("AAPL")
    assert glob_prefix("AB*") == "AB" and glob_prefix("*") == ""
    assert match_glob("A*", "AAPL") and not match_glob("A*", "MSFT")


def test_next_url_and_key_stripping() -> None:
    url = "https://api.massive.com/v3/trades/AAPL?cursor=YWN0aXZl&apiKey=SECRET123&limit=5"
    assert "SECRET123" not in strip_api_key(url)
    assert strip_api_key("http://h/x?apiKey=SECRET") == "http://h/x"
    pq = path_and_query(url)
    assert pq.startswith("/v3/trades/AAPL?") and "cursor=YWN0aXZl" in pq
    assert "SECRET123" not in pq and "limit=5" in pq
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0) == 0.0


class _OnePage:
    """A fake of the REST pager: one page holding ``results``."""

    stats = None

    def __init__(self, results: list[Any]) -> None:
        self.results = results

    async def pages(self, path: str, params: Any,
                    decode: Any = None) -> AsyncIterator[dict[str, Any]]:
        yield {"results": self.results}


class _CollectingSink:
    """A fake of the publisher: keeps the produced values, acknowledges everything."""

    failed = 0

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def produce_many(self, items: list[tuple[str, str, bytes]]) -> None:
        self.values.extend(value for _, _, value in items)

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0


def test_engine_skips_bars_still_running() -> None:
    """A bar whose interval is not over at fetch time is not published (pure engine run
    with an in-memory client and sink: no network)."""
    import asyncio

    from backfill.engine import BackfillEngine

    now = day_start_ns(dt.date(2024, 1, 2)) + 600 * NS + 30 * NS  # 00:10:30 New York
    first = day_start_ns(dt.date(2024, 1, 2)) // 10**6
    results = [{"o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "t": first + i * 60_000}
               for i in range(11)]  # 00:00 .. 00:10, the last one still running

    class Encoder:
        def encode(self, kind: str, record: dict[str, Any]) -> bytes:
            return str(record["start_ns"]).encode()

    sink = _CollectingSink()
    window = plan_windows("AAPL", "bars", dt.date(2024, 1, 2), dt.date(2024, 1, 2), "1Min")
    engine = BackfillEngine(_OnePage(results), sink, Encoder(), None,  # type: ignore[arg-type]
                            now_ns=lambda: now)
    progress = asyncio.run(engine.run(window))
    assert progress.records == 10 and progress.partial_bars == 1
    assert sink.values[-1] == str((first + 9 * 60_000) * 10**6).encode()


class _CollectingDeadLetters:
    """A fake of ``common.deadletter.DeadLetterProducer``: keeps what was sent; ``unacked``
    dead letters stay unacknowledged for the first flushes."""

    topic = "test.dead-letter"

    def __init__(self, unacked: int = 0, failed: int = 0) -> None:
        self.sent: list[tuple[str, bytes, BaseException, str, dict[str, object]]] = []
        self.unacked = unacked
        self.failed = failed
        self.flushes = 0

    def send(self, key: str, value: bytes, exc: BaseException, reason: str,
             source: dict[str, object]) -> None:
        self.sent.append((key, value, exc, reason, source))

    def flush(self, timeout_s: float = 30.0) -> int:
        self.flushes += 1
        left, self.unacked = self.unacked, 0
        return left


class _Checkpoint:
    def __init__(self) -> None:
        self.done: list[tuple[str, int]] = []

    def __contains__(self, window_id: str) -> bool:
        return False

    def mark_done(self, entries: list[tuple[str, int]]) -> None:
        self.done += entries


def _trade(seq: int, sip: int) -> dict[str, Any]:
    return {"sip_timestamp": sip, "price": 1.5, "size": 10, "exchange": 4, "id": str(seq),
            "sequence_number": seq}


def _bad_trades() -> list[dict[str, Any]]:
    """Four REST trades: one beyond the schema (a timestamp over a long), one without a
    price, one with a price that is not a number; the others good."""
    day = day_start_ns(dt.date(2024, 1, 2))
    missing = _trade(4, day + 4)
    del missing["price"]
    return [_trade(1, day + 1), _trade(2, 2**64 - 1), _trade(3, day + 3), missing,
            {**_trade(5, day + 5), "price": "n/a"}, _trade(6, day + 6)]


def test_engine_dead_letters_bad_results_and_publishes_the_others() -> None:
    """A result that cannot be mapped or encoded goes to the dead-letter topic as its JSON
    with the reason and the window; the window's other records are published and the
    window is checkpointed once the dead letters are acknowledged too."""
    import asyncio
    import json

    from backfill.engine import BackfillEngine
    from common.config import Config
    from schemas.codec import make_codec

    codec = make_codec(Config())
    sink, dead, checkpoint = _CollectingSink(), _CollectingDeadLetters(), _Checkpoint()
    windows = plan_windows("AAPL", "trades", dt.date(2024, 1, 2), dt.date(2024, 1, 2))
    engine = BackfillEngine(_OnePage(_bad_trades()), sink, codec, checkpoint,  # type: ignore[arg-type]
                            dead_letters=dead)
    progress = asyncio.run(engine.run(windows))
    assert [codec.decode(v)[1]["sequence_number"] for v in sink.values] == [1, 3, 6]
    assert progress.records == 3 and progress.bad_results == 3 and progress.dead_letters == 3
    assert progress.windows_done == 1 and progress.windows_failed == 0
    assert checkpoint.done == [(windows[0].id, 3)]
    assert [(key, reason, source) for key, _, _, reason, source in dead.sent] == [
        ("AAPL", "mapping", {"window": windows[0].id, "kind": "trade"}),
        ("AAPL", "mapping", {"window": windows[0].id, "kind": "trade"}),
        ("AAPL", "encode", {"window": windows[0].id, "kind": "trade"})]
    bad = _bad_trades()
    assert [json.loads(value) for _, value, _, _, _ in dead.sent] == [bad[3], bad[4], bad[1]]
    assert "'price'" in str(dead.sent[0][2]) and "n/a" in str(dead.sent[1][2])
    assert "expected long" in str(dead.sent[2][2])


def test_a_window_waits_for_its_dead_letters_before_the_checkpoint() -> None:
    """A dead letter still unacknowledged at the final flush, or one Kafka failed to
    deliver, keeps the window out of the checkpoint (a rerun redoes it)."""
    import asyncio

    from backfill.engine import BackfillEngine
    from common.config import Config
    from schemas.codec import make_codec

    codec = make_codec(Config())
    windows = plan_windows("AAPL", "trades", dt.date(2024, 1, 2), dt.date(2024, 1, 2))

    slow, checkpoint = _CollectingDeadLetters(unacked=1), _Checkpoint()
    engine = BackfillEngine(_OnePage(_bad_trades()), _CollectingSink(), codec,  # type: ignore[arg-type]
                            checkpoint, dead_letters=slow)
    progress = asyncio.run(engine.run(windows))
    assert slow.flushes == 1 and len(slow.sent) == 3
    assert checkpoint.done == [] and progress.windows_checkpointed == 0

    class Failing(_CollectingDeadLetters):
        def send(self, *args: Any) -> None:
            super().send(*args)
            self.failed += 1  # as librdkafka's delivery report would count it

    failing, checkpoint = Failing(), _Checkpoint()
    engine = BackfillEngine(_OnePage(_bad_trades()), _CollectingSink(), codec,  # type: ignore[arg-type]
                            checkpoint, dead_letters=failing)
    progress = asyncio.run(engine.run(windows))
    assert checkpoint.done == [] and progress.windows_checkpointed == 0
    assert progress.failures == ["1 window(s) had Kafka delivery failures"]


def test_without_a_dead_letter_producer_a_bad_result_fails_its_window() -> None:
    """Never a silent skip: the good records are published, the window is not
    checkpointed and its failure names the window and the first reason."""
    import asyncio

    from backfill.engine import BackfillEngine
    from common.config import Config
    from schemas.codec import make_codec

    codec = make_codec(Config())
    sink, checkpoint = _CollectingSink(), _Checkpoint()
    windows = plan_windows("AAPL", "trades", dt.date(2024, 1, 2), dt.date(2024, 1, 2))
    engine = BackfillEngine(_OnePage(_bad_trades()), sink, codec, checkpoint)  # type: ignore[arg-type]
    progress = asyncio.run(engine.run(windows))
    assert [codec.decode(v)[1]["sequence_number"] for v in sink.values] == [1, 3, 6]
    assert progress.bad_results == 3 and progress.dead_letters == 0
    assert progress.windows_done == 0 and progress.windows_failed == 1
    assert checkpoint.done == [] and progress.windows_checkpointed == 0
    assert len(progress.failures) == 1
    assert progress.failures[0].startswith(f"{windows[0].id}: 3 bad REST result(s), first: "
                                           "mapping: REST result without 'price'")


@pytest.mark.parametrize("item", [None, 7, "AAPL", [1, 2]])
def test_a_results_item_that_is_not_an_object_is_a_mapping_error(item: object) -> None:
    """The engine skips MappingError only; anything else stops the whole backfill."""
    with pytest.raises(MappingError, match="bad trade result"):
        trade_from_rest(item, "AAPL")  # type: ignore[arg-type]
    with pytest.raises(MappingError, match="bad quote result"):
        quote_from_rest(item, "AAPL")  # type: ignore[arg-type]
    with pytest.raises(MappingError, match="bad bar result"):
        bar_from_rest(item, "AAPL", "1Min")  # type: ignore[arg-type]


def test_run_job_without_resume_opens_one_checkpoint(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-resume used to open (and read) the checkpoint file twice and leave the first
    file descriptor open."""
    import asyncio

    from backfill import job
    from backfill.checkpoint import Checkpoint
    from backfill.options import Options
    from common.config import Config, MassiveConfig

    opened: list[Checkpoint] = []

    class Recording(Checkpoint):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            opened.append(self)

    class Sink:
        failed = 0

        def produce_many(self, items: list[tuple[str, str, bytes]]) -> None:
            raise AssertionError("nothing to publish")

        def flush(self, timeout_s: float = 30.0) -> int:
            return 0

    monkeypatch.setattr(job, "Checkpoint", Recording)
    config = Config(massive=MassiveConfig(api_key="k", base_url="http://127.0.0.1:9"))
    options = Options(data_types=["trades"], bar_frequencies=[], starts={},
                      end=dt.date(2024, 1, 2), symbols=[], parallelism=1, batch_size=10,
                      adjusted=True, state_dir=str(tmp_path), resume=False)
    result = asyncio.run(job.run_job(config, options, Sink(), None, asyncio.Event()))
    assert result.symbols == [] and len(opened) == 1
    assert opened[0].key.startswith(job.checkpoint_key(config, True) + "-")
    assert opened[0]._fd == -1  # closed at the end
