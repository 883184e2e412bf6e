"""The market model: deterministic, window-independent, SIP-like sequence numbers, exact bars.

Also keeps tests/data/simulator/ (sample frames and REST answers others can read) in step
with the model: regenerate with ``python -m tests.test_simulator_model``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulator import wire
from simulator.model import (
    DAY_NS,
    MINUTE_NS,
    NS,
    MarketModel,
    aggregate_trades,
    regroup,
)
from tests.support.wait import wait_for

DAY = 1_704_153_600 * NS  # 2024-01-02T00:00:00Z
DATA = Path(__file__).parent / "data" / "simulator"


def columns(batch: Any) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in vars(batch).items()}


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b, c = MarketModel(3, 7, 7), MarketModel(3, 7, 7), MarketModel(4, 7, 7)
    assert columns(a.trades("AAPL", DAY, DAY + 5 * NS)) == columns(b.trades("AAPL", DAY,
                                                                               DAY + 5 * NS))
    assert columns(a.quotes("AAPL", DAY, DAY + 5 * NS)) == columns(b.quotes("AAPL", DAY,
                                                                               DAY + 5 * NS))
    assert a.trades("AAPL", DAY, DAY + 5 * NS).price.tolist() != c.trades(
        "AAPL", DAY, DAY + 5 * NS).price.tolist()


@pytest.mark.parametrize("cut", [1, 123_456_789, 999_999_999, 2 * NS + 7])
def test_windows_split_anywhere_add_up(cut: int) -> None:
    m = MarketModel(1, 13.5, 9.25)
    whole = m.trades("MSFT", DAY, DAY + 4 * NS)
    left, right = m.trades("MSFT", DAY, DAY + cut), m.trades("MSFT", DAY + cut, DAY + 4 * NS)
    assert whole.seq.tolist() == left.seq.tolist() + right.seq.tolist()
    assert whole.price.tolist() == left.price.tolist() + right.price.tolist()
    q = m.quotes("MSFT", DAY, DAY + 4 * NS)
    assert q.seq.tolist() == (m.quotes("MSFT", DAY, DAY + cut).seq.tolist()
                              + m.quotes("MSFT", DAY + cut, DAY + 4 * NS).seq.tolist())


def test_sequence_numbers_are_shared_increasing_and_reset_daily() -> None:
    m = MarketModel(1, 5, 5)
    lo, hi = DAY - 30 * NS, DAY + 30 * NS  # across UTC midnight
    t, q = m.trades("AAPL", lo, hi), m.quotes("AAPL", lo, hi)
    assert np.all(np.diff(t.sip) > 0) and np.all(np.diff(q.sip) > 0)
    merged = sorted(zip(np.concatenate([t.sip, q.sip]).tolist(),
                        np.concatenate([t.seq, q.seq]).tolist(), strict=True))
    before = [s for ts, s in merged if ts < DAY]
    after = [s for ts, s in merged if ts >= DAY]
    assert before == sorted(before) and after == sorted(after)
    assert len(set(before + after)) == len(merged)  # unique within any 24 hours
    assert after[0] < before[0]  # the sequence restarts at UTC midnight


def test_fractional_rates_and_optional_fields() -> None:
    m = MarketModel(9, 2.5, 0.5)
    t = m.trades("AAPL", DAY, DAY + 400 * NS)
    per_second = np.bincount((t.sip - DAY) // NS, minlength=400)
    assert set(per_second.tolist()) <= {2, 3} and abs(per_second.mean() - 2.5) < 0.2
    ws = wire.ws_trades(t)
    rest = wire.rest_trades(t)
    assert any("c" not in e for e in ws) and any("c" in e for e in ws)
    frac = [(w, r) for w, r in zip(ws, rest, strict=True) if "ds" in w]
    assert frac and all(r["decimal_size"] == w["ds"] and float(w["ds"]) == r["size"]
                        and w["s"] == int(r["size"]) for w, r in frac)
    assert all(("trfi" in w) == (w["x"] == 4) for w in ws)
    quotes = wire.ws_quotes(m.quotes("AAPL", DAY, DAY + 400 * NS))
    assert all(q["bp"] < q["ap"] for q in quotes)
    assert all(isinstance(q.get("c", 0), int) for q in quotes)


def test_minute_and_hour_bars_are_exact_aggregations() -> None:
    m = MarketModel(5, 3, 1)
    t = m.trades("IBM", DAY, DAY + DAY_NS)
    by_trades = aggregate_trades(t.sip, t.price, t.size_e4, MINUTE_NS)
    day = m.day_minutes("IBM", DAY)
    assert day.count.tolist() == by_trades.count.tolist() == [180] * 1440
    assert day.pv.tolist() == by_trades.pv.tolist()
    hours = m.bars("IBM", 1, "hour", DAY, DAY + DAY_NS, now_ns=time.time_ns())
    assert hours.count.tolist() == regroup(by_trades, 3600 * NS).count.tolist()
    assert hours.high.tolist() == aggregate_trades(t.sip, t.price, t.size_e4,
                                                   3600 * NS).high.tolist()
    bar = m.minute_bar("IBM", DAY + 90 * MINUTE_NS + 5 * NS)
    assert bar is not None and bar.start_ns == DAY + 90 * MINUTE_NS
    minute = t.take((t.sip >= bar.start_ns) & (t.sip < bar.start_ns + MINUTE_NS))
    assert (bar.open, bar.close, bar.count) == (minute.price[0], minute.price[-1], 180)
    assert bar.day_open == t.price[0]
    assert bar.day_volume_e4 == int(t.size_e4[t.sip < bar.start_ns + MINUTE_NS].sum())


def test_long_timespans_are_cheap_and_calendar_aligned() -> None:
    m = MarketModel(1, 5, 5)
    now = time.time_ns()
    start = 1_577_836_800 * NS  # 2020-01-01
    end = 1_735_689_600 * NS  # 2025-01-01
    days = m.bars("AAPL", 1, "day", start, end, now)
    assert len(days) == 1827 and days.count.tolist() == [432_000] * 1827
    weeks = m.bars("AAPL", 1, "week", start, end, now)
    first = dt.datetime.fromtimestamp(int(weeks.start_ns[1]) // NS, tz=dt.UTC)
    assert first.weekday() == 6  # Sunday
    months = m.bars("AAPL", 3, "month", start, end, now)
    assert [dt.datetime.fromtimestamp(int(s) // NS, tz=dt.UTC).month
            for s in months.start_ns[:4]] == [1, 4, 7, 10]
    assert int(m.bars("AAPL", 1, "year", start, end, now).volume_e4.sum()) == int(
        days.volume_e4.sum())
    assert len(m.bars("AAPL", 1, "day", now - 10 * DAY_NS, now + 10 * DAY_NS, now)) == 11


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="trades_per_second"):
        MarketModel(1, -1, 1)
    with pytest.raises(ValueError, match="quotes_per_second"):
        MarketModel(1, 1, 10**9)


def test_cli_serves_everything_on_one_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MASSIVE_FETCHER_CONFIG"}
    proc = subprocess.Popen([sys.executable, "-m", "massive_fetcher", "simulator", "--port",
                             str(port), "--symbols", "AAPL", "ZZSIM1",
                             "--api-key", "sekrit-key-42"], env=env, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, "the simulator exited"
            with urllib.request.urlopen(f"{base}/healthz", timeout=1) as resp:
                assert resp.status == 200
            return True

        wait_for(healthy, 90, "the simulator's /healthz", retry_on=(OSError,),
                 interval_s=0.1)
        with urllib.request.urlopen(f"{base}/v3/reference/tickers?apiKey=sekrit-key-42") as resp:
            assert [r["ticker"] for r in json.loads(resp.read())["results"]] == ["AAPL",
                                                                               "ZZSIM1"]
        with urllib.request.urlopen(f"{base}/metrics") as resp:
            assert b"massive_fetcher_simulator_rest_requests_total" in resp.read()
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0
    assert b"simulator listening" in err and b"sekrit-key-42" not in err
    bad = subprocess.run([sys.executable, "-m", "massive_fetcher", "simulator",
                          "--trades-per-second", "1e9"], env=env, capture_output=True,
                         timeout=120)  # a guard against a hang: at load ~60 this took 18 s
    assert bad.returncode == 2 and b"trades_per_second" in bad.stderr


# ---------------------------------------------------------------------- recorded samples
def samples() -> dict[str, Any]:
    """Sample frames and REST answers in the simulator's (= Massive's) format."""
    m = MarketModel(42, 5, 5)
    lo, hi = DAY + 9 * 3600 * NS, DAY + 9 * 3600 * NS + NS
    trades = wire.ws_trades(m.trades("AAPL", lo, hi)) + wire.ws_trades(
        m.trades("BRK.A", lo, hi))
    quotes = wire.ws_quotes(m.quotes("AAPL", lo, hi))
    bar = m.minute_bar("AAPL", lo)
    assert bar is not None
    otc = m.minute_bar("TCEHY", lo)
    assert otc is not None
    frac = next(e for e in wire.ws_trades(m.trades("MSFT", lo, lo + 60 * NS)) if "ds" in e)
    status = lambda s, msg: [{"ev": "status", "status": s, "message": msg}]  # noqa: E731
    return {
        "ws_frames.json": [
            status("connected", "Connected Successfully"),
            status("auth_success", "authenticated"),
            status("success", "subscribed to: T.AAPL"),
            trades + quotes,
            [frac],
            [wire.ws_minute_agg(bar), wire.ws_minute_agg(otc)],
            status("auth_failed", "authentication failed"),
        ],
        "rest_trades.json": {"results": wire.rest_trades(m.trades("AAPL", lo, hi)),
                             "status": "OK", "request_id": "0" * 32},
        "rest_quotes.json": {"results": wire.rest_quotes(m.quotes("AAPL", lo, hi)),
                             "status": "OK", "request_id": "0" * 32},
        "rest_aggs_minute.json": wire.rest_bars(
            m.bars("AAPL", 1, "minute", lo, lo + 3 * MINUTE_NS, now_ns=lo + DAY_NS), False),
    }


def test_recorded_samples_match_the_model() -> None:
    for name, content in samples().items():
        assert json.loads((DATA / name).read_text()) == content, (
            f"{name} is stale: python -m tests.test_simulator_model")


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    for name, content in samples().items():
        (DATA / name).write_text(json.dumps(content, indent=1) + "\n")
        print("wrote", DATA / name)


def test_trade_only_generation_equals_the_trades_of_the_full_event_stream() -> None:
    # Day minute aggregates skip the quotes; they must see exactly the same trades.
    for tps, qps in ((30, 30), (2.5, 7.3), (0.01, 0.01), (1000, 1), (1, 1000), (3, 0)):
        m = MarketModel(seed=5, trades_per_second=tps, quotes_per_second=qps, symbols=["IBM"])
        for start in (DAY, DAY + 12_345_678_901, DAY + 86_399 * NS):
            end = start + 300 * NS + 7
            ekey, sip, _seq, is_trade = m._events("IBM", start, end)
            tkey, tsip = m._trade_events("IBM", start, end)
            assert np.array_equal(ekey[is_trade], tkey) and np.array_equal(sip[is_trade], tsip)
            assert tps < 1 or len(tsip) > 0
