"""Massive REST results -> records (plain dicts keyed by the schemas/*.avsc field names).

Pure functions, no I/O. Every timestamp leaves here as Unix nanoseconds: aggregates carry
milliseconds (``t``), v3 trades/quotes already carry nanoseconds and are kept exactly.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from common.timeframes import TimeframeError, parse_timeframe

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
MARKET_TZ = ZoneInfo("America/New_York")



class MappingError(ValueError):
    """A REST result that cannot become a record (a required field missing or mistyped)."""


def bar_end_ns(start_ns: int, timeframe: str) -> int:
    """End of a bar that starts at ``start_ns``.

    Massive's daily bars start at midnight America/New_York, so a day is 23 or 25 hours
    long on the DST switch days: the end is the same wall-clock time on the next day.
    """
    try:
        tf = parse_timeframe(timeframe)
    except TimeframeError:
        raise MappingError(f"unknown timeframe {timeframe!r}") from None
    if tf.calendar:
        start = dt.datetime.fromtimestamp(start_ns // NS_PER_S, MARKET_TZ)
        if start_ns % (86400 * NS_PER_S) == 0 and start.time() != dt.time():
            # a UTC-midnight day (e.g. the simulator's): the next UTC midnight
            return start_ns + 86400 * NS_PER_S
        nxt = dt.datetime.combine(start.date() + dt.timedelta(days=1), start.time(),
                                  tzinfo=MARKET_TZ)
        # integer arithmetic keeps sub-second parts of start_ns exact
        return start_ns + (int(nxt.timestamp()) - int(start.timestamp())) * NS_PER_S
    return start_ns + tf.seconds * NS_PER_S


def _req(result: Mapping[str, Any], key: str) -> Any:
    try:
        value = result[key]
    except KeyError:
        raise MappingError(f"REST result without {key!r}: {dict(result)!r}"[:300]) from None
    if value is None:
        raise MappingError(f"REST result with null {key!r}")
    return value


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _quote_price(value: Any) -> float:
    """A quote side's price; a one-sided quote has none for the other side: NaN (stored as
    NaN, never as a price of 0.0)."""
    return math.nan if value is None else float(value)


def _quote_size(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _ints(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int | float):  # a lone condition code
        return [int(value)]
    return [int(v) for v in value]


def bar_from_rest(result: Mapping[str, Any], symbol: str, timeframe: str) -> dict[str, Any]:
    """One ``results`` item of ``/v2/aggs/ticker/.../range/...`` -> a bar record."""
    try:
        start_ns = int(_req(result, "t")) * NS_PER_MS
        return {
            "symbol": symbol,
            "timeframe": timeframe,
            "start_ns": start_ns,
            "end_ns": bar_end_ns(start_ns, timeframe),
            "open": float(_req(result, "o")),
            "high": float(_req(result, "h")),
            "low": float(_req(result, "l")),
            "close": float(_req(result, "c")),
            "volume": float(_req(result, "v")),
            "vwap": _float(result.get("vw")),
            "trades": _int(result.get("n")),
            "accumulated_volume": None,
            "official_open": None,
            "day_vwap": None,
            "average_trade_size": None,
            "otc": bool(result.get("otc", False)),
            "source": "backfill",
            "received_ns": None,
        }
    except (TypeError, ValueError, AttributeError) as exc:  # AttributeError: not an object
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"bad bar result for {symbol}: {exc}") from None


def trade_from_rest(result: Mapping[str, Any], symbol: str) -> dict[str, Any]:
    """One ``results`` item of ``/v3/trades/{ticker}`` -> a trade record."""
    try:
        decimal_size = result.get("decimal_size")
        size = float(decimal_size) if decimal_size not in (None, "") else float(
            _req(result, "size"))
        return {
            "symbol": symbol,
            "sip_timestamp_ns": int(_req(result, "sip_timestamp")),
            "participant_timestamp_ns": _int(result.get("participant_timestamp")),
            "trf_timestamp_ns": _int(result.get("trf_timestamp")),
            "price": float(_req(result, "price")),
            "size": size,
            "exchange": int(_req(result, "exchange")),
            "tape": _int(result.get("tape")),
            "conditions": _ints(result.get("conditions")),
            "id": str(_req(result, "id")),
            "sequence_number": int(_req(result, "sequence_number")),
            "trf_id": _int(result.get("trf_id")),
            "correction": _int(result.get("correction")),
            "source": "backfill",
            "received_ns": None,
        }
    except (TypeError, ValueError, AttributeError) as exc:  # AttributeError: not an object
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"bad trade result for {symbol}: {exc}") from None


def quote_from_rest(result: Mapping[str, Any], symbol: str) -> dict[str, Any]:
    """One ``results`` item of ``/v3/quotes/{ticker}`` -> a quote record."""
    try:
        return {
            "symbol": symbol,
            "sip_timestamp_ns": int(_req(result, "sip_timestamp")),
            "participant_timestamp_ns": _int(result.get("participant_timestamp")),
            "trf_timestamp_ns": _int(result.get("trf_timestamp")),
            "bid_price": _quote_price(result.get("bid_price")),
            "bid_size": _quote_size(result.get("bid_size")),
            "bid_exchange": _int(result.get("bid_exchange")),
            "ask_price": _quote_price(result.get("ask_price")),
            "ask_size": _quote_size(result.get("ask_size")),
            "ask_exchange": _int(result.get("ask_exchange")),
            "conditions": _ints(result.get("conditions")),
            "indicators": _ints(result.get("indicators")),
            "sequence_number": int(_req(result, "sequence_number")),
            "tape": _int(result.get("tape")),
            "source": "backfill",
            "received_ns": None,
        }
    except (TypeError, ValueError, AttributeError) as exc:  # AttributeError: not an object
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"bad quote result for {symbol}: {exc}") from None


def record_from_rest(kind: str, result: Mapping[str, Any], symbol: str,
                     timeframe: str | None = None) -> dict[str, Any]:
    if kind == "bar":
        return bar_from_rest(result, symbol, timeframe or "1Min")
    if kind == "trade":
        return trade_from_rest(result, symbol)
    if kind == "quote":
        return quote_from_rest(result, symbol)
    raise MappingError(f"unknown kind {kind!r}")
