"""Massive REST results -> records (plain dicts keyed by the schemas/*.avsc field names).

Pure functions, no I/O. Every timestamp leaves here as Unix nanoseconds: aggregates carry
milliseconds (``t``), v3 trades/quotes already carry nanoseconds and are kept exactly. The
keys, scales and absent values are the schema's specification (:mod:`schemas.spec`),
compiled once per kind (:mod:`schemas.mapgen`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from common.timeframes import TimeframeError, parse_timeframe
from schemas.mapgen import RestMapper, compile_rest
from schemas.spec import Kind, KindSpec, spec

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


_MAPPERS = {kind: compile_rest(spec(kind), MappingError, bar_end_ns) for kind in Kind}


def rest_mapper(kind_spec: KindSpec) -> RestMapper:
    """The mapper ``f(result, symbol, timeframe) -> record`` of a specification (e.g. one
    loaded from another schema directory)."""
    return compile_rest(kind_spec, MappingError, bar_end_ns)


def bar_from_rest(result: Mapping[str, Any], symbol: str, timeframe: str) -> dict[str, Any]:
    """One ``results`` item of ``/v2/aggs/ticker/.../range/...`` -> a bar record."""
    return _MAPPERS[Kind.BAR](result, symbol, timeframe)


def trade_from_rest(result: Mapping[str, Any], symbol: str) -> dict[str, Any]:
    """One ``results`` item of ``/v3/trades/{ticker}`` -> a trade record."""
    return _MAPPERS[Kind.TRADE](result, symbol, None)


def quote_from_rest(result: Mapping[str, Any], symbol: str) -> dict[str, Any]:
    """One ``results`` item of ``/v3/quotes/{ticker}`` -> a quote record."""
    return _MAPPERS[Kind.QUOTE](result, symbol, None)


def record_from_rest(kind: str, result: Mapping[str, Any], symbol: str,
                     timeframe: str | None = None) -> dict[str, Any]:
    try:
        mapper = _MAPPERS[Kind.of(kind)]
    except ValueError:
        raise MappingError(f"unknown kind {kind!r}") from None
    return mapper(result, symbol, timeframe or "1Min")
