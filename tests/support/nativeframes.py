"""The simulator's events as WebSocket frames, and the check that the native frame encoder
gives for a frame exactly the reference path's records (or declines it)."""

from __future__ import annotations

import functools
from typing import Any

import orjson

from producer.mapping import MappingError, event_timestamp_ns, record_from_ws_event
from producer.nativeframes import NativeFrames
from schemas.keys import symbol_key

TOPICS = {"bar": "b-topic", "trade": "t-topic", "quote": "q-topic"}
RECEIVED = (1_795_581_905_157_190_423, 0, -5)


def simulator_events() -> list[dict[str, Any]]:
    from simulator import wire
    from simulator.model import MarketModel

    model = MarketModel(seed=11, trades_per_second=3000, quotes_per_second=3000,
                        symbols=["AAPL", "BRK.A", "SPY"])
    start = 1704205800 * 10**9
    events: list[dict[str, Any]] = []
    for sym in model.symbols:
        events += wire.ws_trades(model.trades(sym, start, start + 10**9))
        events += wire.ws_quotes(model.quotes(sym, start, start + 10**9))
    return events


def minute_bars() -> list[dict[str, Any]]:
    """The simulator's AM events for a few symbols over two hours."""
    from simulator import wire
    from simulator.model import MarketModel

    model = MarketModel(seed=5, symbols=["AAPL", "BRK.A", "SPY", "OTCQ"])
    start = 1704205800 * 10**9
    bars = []
    for sym in model.symbols:
        for minute in range(120):
            bar = model.minute_bar(sym, start + minute * 60 * 10**9)
            if bar is not None:
                bars.append(wire.ws_minute_agg(bar))
    return bars


def events_by_time() -> list[dict[str, Any]]:
    return sorted(simulator_events(), key=lambda e: e["t"])


def reference_frame(codec: Any, frame: bytes, received_ns: int,
                    kinds: tuple[str, ...] = ("bar", "trade", "quote")) -> Any:
    """The reference path's (records, counts by kind, last event time) for a frame, or None
    if it rejects any part of it."""
    try:
        items = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if type(items) is not list or not items:
        return None
    records = []
    counts = dict.fromkeys(kinds, 0)
    for ev in items:
        if type(ev) is not dict or ev.get("ev") not in ("AM", "T", "Q"):
            return None
        try:
            kind, record = record_from_ws_event(ev, received_ns)
            value = codec.encode(kind, record)
        except (MappingError, ValueError, TypeError, KeyError, OverflowError):
            return None
        records.append((TOPICS[kind], value, symbol_key(record["symbol"])))
        counts[kind] += 1
    return records, tuple(counts.values()), event_timestamp_ns(kind, record)


def check_frame(enc: NativeFrames, codec: Any, frame: bytes) -> bool:
    """True when the native encoder took the frame (and then gave the reference bytes)."""
    for received_ns in RECEIVED:
        got = enc.encode(frame, received_ns)
        if got is None:
            return False
        want = reference_frame(codec, frame, received_ns, enc.kinds)
        assert want is not None, f"native accepted a frame the Python path rejects: {frame!r}"
        assert got == want, frame
    return True


# -- REST pages ------------------------------------------------------------------------


@functools.cache
def simulator_pages(symbol: str = "AAPL") -> dict[str, list[dict[str, Any]]]:
    """The simulator's REST results per kind: a few seconds of trades and quotes, a few
    hours of minute bars (of a slower market: bars are made of trades)."""
    from simulator import wire
    from simulator.model import MarketModel

    start = 1704205800 * 10**9
    model = MarketModel(seed=13, trades_per_second=3000, quotes_per_second=3000,
                        symbols=[symbol])
    slow = MarketModel(seed=13, trades_per_second=0.5, quotes_per_second=0.5,
                       symbols=[symbol])
    end = start + 3 * 3600 * 10**9
    return {"trade": wire.rest_trades(model.trades(symbol, start, start + 2 * 10**9)),
            "quote": wire.rest_quotes(model.quotes(symbol, start, start + 2 * 10**9)),
            "bar": wire.rest_bars(slow.bars(symbol, 1, "minute", start, end, end), otc=False)}


def reference_page(codec: Any, kind: str, body: bytes, symbol: str,
                   timeframe: str | None) -> Any:
    """The reference path's (page without its results, records) for a page body, or None
    if it rejects the body or any result in it."""
    from backfill.mapping import MappingError as RestMappingError
    from backfill.mapping import record_from_rest

    try:
        page = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(page) is not dict:
        return None
    results = page.get("results")
    if results is not None and type(results) is not list:
        return None
    records = []
    for result in results or []:
        try:
            record = record_from_rest(kind, result, symbol, timeframe)
            records.append(codec.encode(kind, record))
        except (RestMappingError, ValueError, TypeError, KeyError, OverflowError):
            return None
    if "results" in page:
        page["results"] = None
    return page, records


def check_page(pages: Any, codec: Any, kind: str, body: bytes, symbol: str = "AAPL",
               timeframe: str | None = "1Min") -> bool:
    """True when the native page encoder took the page (and then gave the reference's page
    and bytes)."""
    decode = pages.decoder(kind, symbol, timeframe)
    assert decode is not None
    got = decode(body)
    if got is None:
        return False
    want = reference_page(codec, kind, body, symbol, timeframe)
    assert want is not None, f"native accepted a page the reference rejects: {body!r}"
    assert (dict(got), got.records) == want, body
    return True
