"""Bar timeframes as MarketStore spells them (``15Min``, ``2H``, ``1D`` ...), pure.

MarketStore names a bucket's timeframe ``<N><unit>``: ``Sec`` (or ``S``), ``Min`` (or
``T``), ``H``, ``D``, ``W``. It accepts a write to any of them, but answers a query for
timeframe X from the bucket of its "queryable timeframe": the last entry of its fixed
list (``utils.Timeframes``) that divides X. Rows of any other timeframe are stored and can
never be read back: a ``4H`` query reads the ``2H`` bucket, ``1W`` and ``2D`` read ``1D``,
``7Min`` reads ``1Min`` (seen with v4.1.23, whose list is :data:`QUERYABLE`; ``10Min`` and
``20Min`` are not in it). So a bar timeframe here is one MarketStore returns as itself,
each mapped to Massive's custom bars route as ``multiplier/timespan`` (``15Min`` =
``15/minute``, ``2H`` = ``2/hour``, ``1D`` = ``1/day``). ``S`` and ``T`` are written
``Sec`` and ``Min``, the spelling MarketStore's query parser finds again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAY_S = 86400
# unit -> (canonical spelling, Massive timespan, seconds per unit)
_UNITS: dict[str, tuple[str, str, int]] = {
    "Sec": ("Sec", "second", 1), "S": ("Sec", "second", 1),
    "Min": ("Min", "minute", 60), "T": ("Min", "minute", 60),
    "H": ("H", "hour", 3600),
    "D": ("D", "day", DAY_S),
    "W": ("W", "week", 7 * DAY_S),
}
_PATTERN = re.compile(r"([1-9][0-9]{0,5})(Sec|Min|S|T|H|D|W)")
# MarketStore v4.1.23's utils.Timeframes, in its order (the last divisor wins; 2H after 4H)
QUERYABLE: tuple[tuple[str, int], ...] = (
    ("1Sec", 1), ("10Sec", 10), ("30Sec", 30), ("1Min", 60), ("5Min", 300),
    ("15Min", 900), ("30Min", 1800), ("1H", 3600), ("4H", 14400), ("2H", 7200),
    ("1D", DAY_S))
STORABLE: tuple[str, ...] = tuple(
    name for name, seconds in QUERYABLE
    if next(n for n, s in reversed(QUERYABLE) if seconds % s == 0) == name)


class TimeframeError(ValueError):
    """Not a bar timeframe MarketStore can store and return."""


@dataclass(frozen=True)
class Timeframe:
    name: str  # canonical: "15Min", the bucket's middle part
    multiplier: int  # Massive's custom bars route: /range/{multiplier}/{timespan}
    timespan: str
    seconds: int  # nominal width; a day is 23 or 25 hours on DST switch days

    @property
    def calendar(self) -> bool:
        """Day bars follow the market's calendar, not a fixed width."""
        return self.timespan == "day"

    @property
    def bars_per_day(self) -> int:
        """At most this many bars start in one day (the whole day counted)."""
        return max(1, DAY_S // self.seconds)


def queryable(seconds: int) -> str:
    """The bucket MarketStore answers a query for a timeframe of ``seconds`` from."""
    return next((n for n, s in reversed(QUERYABLE) if seconds % s == 0), "1D")


def parse_timeframe(text: object) -> Timeframe:
    """``"15Min"`` -> Timeframe, or :class:`TimeframeError` saying what is allowed."""
    allowed = ", ".join(STORABLE)
    match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise TimeframeError(f"{text!r} is not a bar timeframe (MarketStore keeps and "
                             f"returns: {allowed})")
    count = int(match.group(1))
    unit, timespan, unit_s = _UNITS[match.group(2)]
    name, seconds = f"{count}{unit}", count * unit_s
    served_by = queryable(seconds)
    if served_by != name:
        raise TimeframeError(f"{text!r}: MarketStore answers a {name} query from its "
                             f"{served_by} bucket, so {name} bars could never be read back "
                             f"(it keeps and returns: {allowed})")
    return Timeframe(name, count, timespan, seconds)


def canonical(text: object) -> str:
    return parse_timeframe(text).name


def is_timeframe(text: object) -> bool:
    try:
        parse_timeframe(text)
    except TimeframeError:
        return False
    return True
