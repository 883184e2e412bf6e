"""Bar timeframes as MarketStore spells them (``15Min``, ``4H``, ``1D``, ``1W`` ...), pure.

MarketStore names a bucket's timeframe ``<N><unit>`` (its ``utils.TimeframeFromString``):
``Sec`` (or ``S``), ``Min`` (or ``T``), ``H``, ``D``, ``W``; ``S`` and ``T`` are written
``Sec`` and ``Min`` here, because MarketStore's own query parser does not find a ``1T``
bucket again. A fixed-length bucket holds ``1 day / timeframe`` rows per day, so an
intraday timeframe must divide a day evenly (``7Min`` rows would not line up with the
slots they are stored in), and nothing longer than ``1D`` can be kept: MarketStore
v4.1.23 acknowledges writes to a ``1W`` or ``2D`` bucket but never returns them (its query
answers "no files returned"; a query for ``1W`` is only ever served from the ``1D``
bucket). Each maps to Massive's custom bars route as ``multiplier/timespan`` (``15Min`` =
``15/minute``, ``4H`` = ``4/hour``, ``1D`` = ``1/day``). Months and years are not
MarketStore timeframes.
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
EXAMPLES = "1Min, 5Min, 15Min, 30Min, 1H, 4H, 1D"


class TimeframeError(ValueError):
    """Not a bar timeframe MarketStore can store."""


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


def parse_timeframe(text: object) -> Timeframe:
    """``"15Min"`` -> Timeframe, or :class:`TimeframeError` saying what is allowed."""
    match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise TimeframeError(f"{text!r} is not a bar timeframe (a count and a unit: Sec, "
                             f"Min, H, D or W, e.g. {EXAMPLES})")
    count = int(match.group(1))
    unit, timespan, unit_s = _UNITS[match.group(2)]
    seconds = count * unit_s
    if seconds < DAY_S and DAY_S % seconds:
        raise TimeframeError(f"{text!r} does not divide a day evenly, so MarketStore "
                             f"cannot store it in a bucket (e.g. {EXAMPLES})")
    if seconds > DAY_S:
        raise TimeframeError(f"{text!r}: MarketStore keeps no bucket longer than 1D (it "
                             "accepts the rows and never returns them); store 1D bars and "
                             "aggregate them when reading")
    return Timeframe(f"{count}{unit}", count, timespan, seconds)


def canonical(text: object) -> str:
    return parse_timeframe(text).name


def is_timeframe(text: object) -> bool:
    try:
        parse_timeframe(text)
    except TimeframeError:
        return False
    return True
