"""Split a backfill request into windows that each fit a page limit (pure, no I/O).

A window is one REST listing (then paged with ``next_url``): bars of one symbol and
timeframe over whole market days, or trades/quotes of one symbol over one market day, or
an exact nanosecond interval for gap repair. Day boundaries are midnight America/New_York,
where Massive's daily bars start. A window's ``id`` depends only on what it covers, so a
checkpoint written by one run is understood by the next.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import quote

from backfill.mapping import MARKET_TZ, NS_PER_MS, NS_PER_S
from common.config import REST_MAX_LIMIT
from common.timeframes import Timeframe, TimeframeError, parse_timeframe
from schemas.spec import Kind

MAX_LIMIT = REST_MAX_LIMIT
DATA_TYPES: tuple[str, ...] = tuple(k.data_type for k in Kind)
NS_PER_MIN = 60 * NS_PER_S


@dataclass(frozen=True, order=True)
class Window:
    data_type: str  # bars | trades | quotes
    symbol: str
    timeframe: str  # bar timeframe, "" for trades/quotes
    start_ns: int  # inclusive
    end_ns: int  # exclusive
    label: str  # what the window covers, readable: 2024-01-02..2024-01-05 or ns..ns
    # Whole-day bar windows are requested by date, so the server applies its own notion of
    # a day (Massive: New York); empty for exact (gap) windows, requested in Unix ms.
    first_day: str = ""
    last_day: str = ""

    @property
    def kind(self) -> Kind:
        return Kind.of_data_type(self.data_type)

    @property
    def id(self) -> str:
        return f"{self.data_type}/{self.timeframe or '-'}/{self.symbol}/{self.label}"


def day_start_ns(day: dt.date) -> int:
    """Midnight America/New_York of ``day`` in Unix ns."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=MARKET_TZ)
    return int(start.timestamp()) * NS_PER_S


def market_today(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(MARKET_TZ).date()


def days_per_window(data_type: str, timeframe: str, limit: int) -> int:
    if data_type != "bars":
        return 1
    # An upper bound of bars per day: extended hours are included and a simulator may
    # trade around the clock, so the whole day counts.
    return max(1, limit // _timeframe(timeframe).bars_per_day)


def _timeframe(timeframe: str) -> Timeframe:
    try:
        return parse_timeframe(timeframe)
    except TimeframeError:
        raise ValueError(f"unknown bar frequency {timeframe!r}") from None


def plan_windows(symbol: str, data_type: str, start: dt.date, end: dt.date,
                 timeframe: str = "", limit: int = MAX_LIMIT) -> list[Window]:
    """Windows covering the market days ``start``..``end`` (both included)."""
    if data_type not in DATA_TYPES:
        raise ValueError(f"unknown data type {data_type!r}")
    timeframe = _timeframe(timeframe).name if data_type == "bars" else ""
    if end < start:
        return []
    step = days_per_window(data_type, timeframe, limit)
    windows = []
    day = start
    while day <= end:
        last = min(end, day + dt.timedelta(days=step - 1))
        label = day.isoformat() if last == day else f"{day.isoformat()}..{last.isoformat()}"
        windows.append(Window(data_type, symbol, timeframe, day_start_ns(day),
                              day_start_ns(last + dt.timedelta(days=1)), label,
                              day.isoformat(), last.isoformat()))
        day = last + dt.timedelta(days=1)
    return windows


def gap_windows(symbol: str, data_types: list[str], start_ns: int, end_ns: int,
                now_ns: int | None = None) -> list[Window]:
    """Windows repairing the interval [start_ns, end_ns] (both included).

    Trades and quotes are fetched over exactly that interval; bars as the 1Min bars whose
    minute overlaps it (the live stream only carries 1Min bars), and the minute before it:
    a minute's AM bar comes after the minute ended, so a connection lost early in a minute
    (``start_ns`` is the newest event of any type) may never have received the last one.
    Not a minute still running at ``now_ns``: a partial bar must not be stored, the live
    stream delivers that one.
    """
    if end_ns < start_ns:
        return []
    windows = []
    for data_type in data_types:
        if data_type == "bars":
            lo = start_ns - start_ns % NS_PER_MIN - NS_PER_MIN
            hi = end_ns - end_ns % NS_PER_MIN + NS_PER_MIN
            if now_ns is not None:
                hi = min(hi, now_ns - now_ns % NS_PER_MIN)
            if hi > lo:
                windows.append(Window("bars", symbol, "1Min", lo, hi, f"{lo}-{hi}"))
        elif data_type in DATA_TYPES:
            windows.append(Window(data_type, symbol, "", start_ns, end_ns + 1,
                                  f"{start_ns}-{end_ns + 1}"))
        else:
            raise ValueError(f"unknown data type {data_type!r}")
    return windows


def request_for(window: Window, limit: int, adjusted: bool) -> tuple[str, dict[str, str]]:
    """The REST path and query of a window's first page."""
    ticker = quote(window.symbol, safe=".")
    limit = max(1, min(limit, MAX_LIMIT))
    if window.data_type == "bars":
        tf = _timeframe(window.timeframe)
        multiplier, timespan = tf.multiplier, tf.timespan
        if window.first_day:
            lo, hi = window.first_day, window.last_day
        else:
            # Unix ms, both ends included by the API: the last ms before the window's end.
            lo = str(window.start_ns // NS_PER_MS)
            hi = str(-(-window.end_ns // NS_PER_MS) - 1)
        path = f"/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{lo}/{hi}"
        return path, {"adjusted": "true" if adjusted else "false", "sort": "asc",
                      "limit": str(limit)}
    path = f"/v3/{window.data_type}/{ticker}"
    return path, {"timestamp.gte": str(window.start_ns), "timestamp.lt": str(window.end_ns),
                  "order": "asc", "sort": "timestamp", "limit": str(limit)}
