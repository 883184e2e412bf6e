"""Ground truth from the simulator: its REST answers fetched directly (one page, plain
urllib) and mapped like the backfill maps them, what its WebSocket sent, and MarketStore
compared with its model row by row."""

from __future__ import annotations

import datetime as dt
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from backfill.mapping import bar_from_rest, quote_from_rest, trade_from_rest
from backfill.plan import day_start_ns
from simulator.server import SimulatorServer
from tests.support.backfillrun import KEY
from tests.support.testkit import read_bucket


def rest_results(base_url: str, path: str, **params: Any) -> list[dict[str, Any]]:
    """The simulator's answer in one page (small windows only)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = urllib.request.Request(f"{base_url}{path}?{query}",
                                     headers={"Authorization": f"Bearer {KEY}"})
    for _ in range(20):
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                body = orjson.loads(resp.read())
            break
        except urllib.error.HTTPError as exc:  # a rate-limited simulator
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    assert "next_url" not in body, "truth must fit one page"
    return body.get("results") or []


def truth_trades(base_url: str, kind: str, symbol: str, lo: int, hi: int
                 ) -> list[dict[str, Any]]:
    results = rest_results(base_url, f"/v3/{kind}s/{symbol}", **{
        "timestamp.gte": lo, "timestamp.lt": hi, "order": "asc", "limit": 50000})
    mapper = trade_from_rest if kind == "trade" else quote_from_rest
    return [mapper(r, symbol) for r in results]


def truth_bars(base_url: str, symbol: str, multiplier: int, timespan: str, timeframe: str,
               lo: str, hi: str, adjusted: bool = True) -> list[dict[str, Any]]:
    results = rest_results(base_url, f"/v2/aggs/ticker/{symbol}/range/{multiplier}/"
                           f"{timespan}/{lo}/{hi}", limit=50000,
                           adjusted=str(adjusted).lower())
    return [bar_from_rest(r, symbol, timeframe) for r in results]


def key_of(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in record.items()))


def as_set(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {key_of(r) for r in records}


def ny_day(day: str) -> int:
    return day_start_ns(dt.date.fromisoformat(day))




def streamed_window(sim: SimulatorServer) -> tuple[int, int]:
    """[lo, hi): from the first event sent on the first connection to the end of what
    every (type, symbol) of the last connection was sent; everything the model holds in
    it must be stored, whatever happened in between."""
    conns = sim.connections()
    first, last = sim.sent(conns[0]["conn"])[0], sim.sent(conns[-1]["conn"])[0]
    lo = min(w["spans"][0][0] for w in first["windows"])
    hi = min(w["spans"][-1][1] for w in last["windows"])
    return lo, hi


def missed_by_the_stream(sim: SimulatorServer, symbol: str, lo: int, hi: int) -> int:
    """Trades in [lo, hi) that no connection was sent: only a repair can store them."""
    live = {ev["q"] for ev in sim.sent_events(ev="T", sym=symbol)}
    return sum(1 for q in sim.model.trades(symbol, lo, hi).seq.tolist() if q not in live)




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


