"""The model's columns in Massive's wire formats: WebSocket events and REST results (pure)."""

from __future__ import annotations

from typing import Any

from simulator.model import (
    MS,
    QUOTE_INDICATORS,
    TRADE_CONDITIONS,
    Aggregates,
    MinuteBar,
    Quotes,
    Trades,
)

Event = dict[str, Any]


def _size_fields(size_e4: list[int]) -> tuple[list[int], list[str | None], list[float]]:
    """(whole shares, decimal string or None when whole, size as a number) per trade."""
    whole = [s // 10_000 for s in size_e4]
    dec: list[str | None] = [None if s % 10_000 == 0 else _decimal(s) for s in size_e4]
    num = [w if d is None else s / 10_000 for w, d, s in zip(whole, dec, size_e4, strict=True)]
    return whole, dec, num


def _decimal(size_e4: int) -> str:
    return f"{size_e4 // 10_000}.{size_e4 % 10_000:04d}".rstrip("0")


def ws_trades(t: Trades) -> list[Event]:
    """``T`` events: ms timestamps, ``i`` a string, ``c`` only when present, ``ds`` only for
    fractional sizes (``s`` is then the whole-share part), ``trfi``/``trft`` for TRF prints."""
    sym = t.symbol
    whole, dec, _num = _size_fields(t.size_e4.tolist())
    out: list[Event] = []
    append = out.append
    tape = t.tape
    for x, p, s, ds, c, ts, q, trfi, trft in zip(
            t.exchange.tolist(), t.price.tolist(), whole, dec, t.conditions.tolist(),
            (t.sip // MS).tolist(), t.seq.tolist(), t.trf_id.tolist(),
            (t.trf_ts // MS).tolist(), strict=True):
        ev: Event = {"ev": "T", "sym": sym, "i": str(q), "x": x, "p": p, "s": s}
        if ds is not None:
            ev["ds"] = ds
        if c >= 0:
            ev["c"] = list(TRADE_CONDITIONS[c])
        ev["t"] = ts
        ev["q"] = q
        if tape is not None:
            ev["z"] = tape
        if trfi >= 0:
            ev["trfi"] = trfi
            ev["trft"] = trft
        append(ev)
    return out


def ws_quotes(qt: Quotes) -> list[Event]:
    """``Q`` events: ``c`` one int when present, ``i`` indicator list when present."""
    sym = qt.symbol
    tape = qt.tape
    out: list[Event] = []
    append = out.append
    for bx, bp, bs, ax, ap, as_, c, ind, ts, q in zip(
            qt.bid_exchange.tolist(), qt.bid.tolist(), qt.bid_size.tolist(),
            qt.ask_exchange.tolist(), qt.ask.tolist(), qt.ask_size.tolist(),
            qt.condition.tolist(), qt.indicators.tolist(), (qt.sip // MS).tolist(),
            qt.seq.tolist(), strict=True):
        ev: Event = {"ev": "Q", "sym": sym, "bx": bx, "bp": bp, "bs": bs, "ax": ax,
                     "ap": ap, "as": as_}
        if c >= 0:
            ev["c"] = c
        if ind >= 0:
            ev["i"] = list(QUOTE_INDICATORS[ind])
        ev["t"] = ts
        ev["q"] = q
        if tape is not None:
            ev["z"] = tape
        append(ev)
    return out


def _volume(v_e4: int) -> float | int:
    return v_e4 // 10_000 if v_e4 % 10_000 == 0 else v_e4 / 10_000


def ws_minute_agg(bar: MinuteBar) -> Event:
    """An ``AM`` event (``dv``/``dav`` decimal strings only when the volume is fractional)."""
    ev: Event = {
        "ev": "AM", "sym": bar.symbol,
        "v": _volume(bar.volume_e4), "av": _volume(bar.day_volume_e4),
        "op": bar.day_open, "vw": bar.vwap,
        "o": bar.open, "c": bar.close, "h": bar.high, "l": bar.low,
        "a": bar.day_vwap, "z": round(bar.volume_e4 / 10_000 / bar.count),
        "s": bar.start_ns // MS, "e": bar.start_ns // MS + 60_000,
    }
    if bar.volume_e4 % 10_000 or bar.day_volume_e4 % 10_000:
        ev["dv"] = _decimal(bar.volume_e4)
        ev["dav"] = _decimal(bar.day_volume_e4)
    if bar.otc:
        ev["otc"] = True
    return ev


def rest_trades(t: Trades) -> list[Event]:
    """/v3/trades results (ns timestamps; only the keys the official client models)."""
    _whole, dec, num = _size_fields(t.size_e4.tolist())
    tape = t.tape
    out: list[Event] = []
    append = out.append
    for c, corr, x, q, part, p, sip, size, ds, trfi, trft in zip(
            t.conditions.tolist(), t.correction.tolist(), t.exchange.tolist(),
            t.seq.tolist(), t.participant.tolist(), t.price.tolist(), t.sip.tolist(),
            num, dec, t.trf_id.tolist(), t.trf_ts.tolist(), strict=True):
        r: Event = {}
        if c >= 0:
            r["conditions"] = list(TRADE_CONDITIONS[c])
        if corr:
            r["correction"] = corr
        r["exchange"] = x
        r["id"] = str(q)
        r["participant_timestamp"] = part
        r["price"] = p
        r["sequence_number"] = q
        r["sip_timestamp"] = sip
        r["size"] = size
        if ds is not None:
            r["decimal_size"] = ds
        if tape is not None:
            r["tape"] = tape
        if trfi >= 0:
            r["trf_id"] = trfi
            r["trf_timestamp"] = trft
        append(r)
    return out


def rest_quotes(qt: Quotes) -> list[Event]:
    """/v3/quotes results (ns timestamps)."""
    tape = qt.tape
    out: list[Event] = []
    append = out.append
    for ax, ap, as_, bx, bp, bs, c, ind, part, q, sip in zip(
            qt.ask_exchange.tolist(), qt.ask.tolist(), qt.ask_size.tolist(),
            qt.bid_exchange.tolist(), qt.bid.tolist(), qt.bid_size.tolist(),
            qt.condition.tolist(), qt.indicators.tolist(), qt.participant.tolist(),
            qt.seq.tolist(), qt.sip.tolist(), strict=True):
        r: Event = {"ask_exchange": ax, "ask_price": ap, "ask_size": as_,
                    "bid_exchange": bx, "bid_price": bp, "bid_size": bs}
        if c >= 0:
            r["conditions"] = [c]
        if ind >= 0:
            r["indicators"] = list(QUOTE_INDICATORS[ind])
        r["participant_timestamp"] = part
        r["sequence_number"] = q
        r["sip_timestamp"] = sip
        if tape is not None:
            r["tape"] = tape
        append(r)
    return out


def rest_bars(aggs: Aggregates, otc: bool) -> list[Event]:
    """/v2/aggs results: v, vw, o, c, h, l, t (bar start, ms), n; ``otc`` when true."""
    out: list[Event] = []
    vw = aggs.vwap()
    for v, w, o, c, h, low, t, n in zip(
            (aggs.volume_e4 / 10_000).tolist(), vw.tolist(), aggs.open.tolist(),
            aggs.close.tolist(), aggs.high.tolist(), aggs.low.tolist(),
            (aggs.start_ns // MS).tolist(), aggs.count.tolist(), strict=True):
        r: Event = {"v": v, "vw": w, "o": o, "c": c, "h": h, "l": low, "t": t, "n": n}
        if otc:
            r["otc"] = True
        out.append(r)
    return out

