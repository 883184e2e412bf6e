"""Massive WebSocket events (AM, T, Q) -> records whose keys are the .avsc field names.

Pure functions, no I/O. Live timestamps arrive in Unix milliseconds and are scaled to
nanoseconds (never the other way). Every field the schema needs is checked for presence
and type, because a half-valid record would either fail later in the encoder, far from
its cause, or worse, be written with a wrong value. Checks use ``type(x) is int`` style
tests on purpose: they are the cheapest correct test (``isinstance`` would let ``True``
pass as an int) and this code runs once per event on the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from schemas.codec import DATA_TYPE_OF_KIND

Record = dict[str, Any]

NS_PER_MS = 1_000_000
LIVE = "live"

# ev code -> record kind
KIND_BY_EV: dict[str, str] = {"AM": "bar", "T": "trade", "Q": "quote"}
# record kind -> WS channel prefix, and config data type -> kind
EV_BY_KIND: dict[str, str] = {v: k for k, v in KIND_BY_EV.items()}
KIND_BY_DATA_TYPE: dict[str, str] = {v: k for k, v in DATA_TYPE_OF_KIND.items()}

_NUMBER = (int, float)


class MappingError(ValueError):
    """An event that cannot become a record: unknown ``ev``, missing or ill-typed field."""


def _missing(ev: dict[str, Any], name: str) -> MappingError:
    return MappingError(f"{ev.get('ev')!r} event: missing field {name!r}")


def _ill_typed(ev: dict[str, Any], name: str, expected: str) -> MappingError:
    value = repr(ev.get(name))
    if len(value) > 40:
        value = value[:40] + "..."
    return MappingError(f"{ev.get('ev')!r} event: field {name!r} must be {expected}, got {value}")


def _req_int(ev: dict[str, Any], name: str) -> int:
    try:
        v = ev[name]
    except KeyError:
        raise _missing(ev, name) from None
    if type(v) is not int:
        raise _ill_typed(ev, name, "an integer")
    return v


def _opt_int(ev: dict[str, Any], name: str) -> int | None:
    v = ev.get(name)
    if v is None or type(v) is int:
        return v
    raise _ill_typed(ev, name, "an integer")


def _req_num(ev: dict[str, Any], name: str) -> float:
    try:
        v = ev[name]
    except KeyError:
        raise _missing(ev, name) from None
    if type(v) is float:
        return v
    if type(v) is int:
        return float(v)
    raise _ill_typed(ev, name, "a number")


def _opt_num(ev: dict[str, Any], name: str) -> float | None:
    v = ev.get(name)
    if v is None or type(v) is float:
        return v
    if type(v) is int:
        return float(v)
    raise _ill_typed(ev, name, "a number")


def _side(ev: dict[str, Any], price: str, size: str) -> tuple[float, float]:
    """One side of a quote: (price, size). A one-sided quote has no price for the other
    side: NaN (stored as NaN, never a price of 0.0); its size then counts 0 shares."""
    p = _opt_num(ev, price)
    s = _opt_num(ev, size)
    return (math.nan if p is None else p), (0.0 if s is None else s)


def _req_str(ev: dict[str, Any], name: str) -> str:
    try:
        v = ev[name]
    except KeyError:
        raise _missing(ev, name) from None
    if type(v) is not str or not v:
        raise _ill_typed(ev, name, "a non-empty string")
    return v


def _decimal(ev: dict[str, Any], name: str) -> float | None:
    """A decimal-string field (``ds``, ``dv``): None when absent, else its float value."""
    v = ev.get(name)
    if v is None:
        return None
    if type(v) is str:
        try:
            f = float(v)
        except ValueError:
            raise _ill_typed(ev, name, "a decimal string") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise _ill_typed(ev, name, "a finite decimal string")
        return f
    if type(v) in _NUMBER:  # lenient: a number where a decimal string was expected
        return float(v)
    raise _ill_typed(ev, name, "a decimal string")


def _int_list(ev: dict[str, Any], name: str) -> list[int]:
    v = ev.get(name)
    if v is None:
        return []
    if type(v) is list:
        for item in v:
            if type(item) is not int:
                raise _ill_typed(ev, name, "a list of integers")
        return v
    raise _ill_typed(ev, name, "a list of integers")


def _bar_checked(ev: dict[str, Any], received_ns: int | None) -> Record:
    volume = _decimal(ev, "dv")
    accumulated = _decimal(ev, "dav")
    otc = ev.get("otc", False)
    if type(otc) is not bool:
        if otc is None:
            otc = False
        else:
            raise _ill_typed(ev, "otc", "a boolean")
    return {
        "symbol": _req_str(ev, "sym"),
        "timeframe": "1Min",
        "start_ns": _req_int(ev, "s") * NS_PER_MS,
        "end_ns": _req_int(ev, "e") * NS_PER_MS,
        "open": _req_num(ev, "o"),
        "high": _req_num(ev, "h"),
        "low": _req_num(ev, "l"),
        "close": _req_num(ev, "c"),
        "volume": _req_num(ev, "v") if volume is None else volume,
        "vwap": _opt_num(ev, "vw"),
        "trades": None,
        "accumulated_volume": _opt_num(ev, "av") if accumulated is None else accumulated,
        "official_open": _opt_num(ev, "op"),
        "day_vwap": _opt_num(ev, "a"),
        "average_trade_size": _opt_num(ev, "z"),
        "otc": otc,
        "source": LIVE,
        "received_ns": received_ns,
    }


def _trade_checked(ev: dict[str, Any], received_ns: int | None) -> Record:
    size = _decimal(ev, "ds")
    trft = _opt_int(ev, "trft")
    return {
        "symbol": _req_str(ev, "sym"),
        "sip_timestamp_ns": _req_int(ev, "t") * NS_PER_MS,
        "participant_timestamp_ns": None,
        "trf_timestamp_ns": None if trft is None else trft * NS_PER_MS,
        "price": _req_num(ev, "p"),
        "size": _req_num(ev, "s") if size is None else size,
        "exchange": _req_int(ev, "x"),
        "tape": _opt_int(ev, "z"),
        "conditions": _int_list(ev, "c"),
        "id": _req_str(ev, "i"),
        "sequence_number": _req_int(ev, "q"),
        "trf_id": _opt_int(ev, "trfi"),
        "correction": None,
        "source": LIVE,
        "received_ns": received_ns,
    }


def _quote_checked(ev: dict[str, Any], received_ns: int | None) -> Record:
    c = ev.get("c")
    if c is None:
        conditions: list[int] = []
    elif type(c) is int:
        conditions = [c]
    else:  # a list is accepted too, in case the feed ever sends several
        conditions = _int_list(ev, "c")
    bid_price, bid_size = _side(ev, "bp", "bs")
    ask_price, ask_size = _side(ev, "ap", "as")
    return {
        "symbol": _req_str(ev, "sym"),
        "sip_timestamp_ns": _req_int(ev, "t") * NS_PER_MS,
        "participant_timestamp_ns": None,
        "trf_timestamp_ns": None,
        "bid_price": bid_price,
        "bid_size": bid_size,
        "bid_exchange": _opt_int(ev, "bx"),
        "ask_price": ask_price,
        "ask_size": ask_size,
        "ask_exchange": _opt_int(ev, "ax"),
        "conditions": conditions,
        "indicators": _int_list(ev, "i"),
        "sequence_number": _req_int(ev, "q"),
        "tape": _opt_int(ev, "z"),
        "source": LIVE,
        "received_ns": received_ns,
    }


# -- fast paths --------------------------------------------------------------------------
# The common, well-formed event is checked with one chained condition and built in one
# dict display; anything unusual (an int price, a decimal size, a missing or ill-typed
# field) takes the checked path above, which gives the same record or a clear error.


def trade_from_t(ev: dict[str, Any], received_ns: int | None) -> Record:
    g = ev.get
    sym = g("sym")
    t = g("t")
    p = g("p")
    s = g("s")
    x = g("x")
    i = g("i")
    q = g("q")
    z = g("z")
    c = g("c")
    trfi = g("trfi")
    trft = g("trft")
    if (sym.__class__ is str and sym and t.__class__ is int and p.__class__ is float
            and s.__class__ is int and x.__class__ is int and i.__class__ is str and i
            and q.__class__ is int and (z is None or z.__class__ is int)
            and (trfi is None or trfi.__class__ is int)
            and (trft is None or trft.__class__ is int) and "ds" not in ev):
        if c is None:
            c = []
        elif c.__class__ is list:
            for v in c:
                if v.__class__ is not int:
                    return _trade_checked(ev, received_ns)
        else:
            return _trade_checked(ev, received_ns)
        return {
            "symbol": sym, "sip_timestamp_ns": t * NS_PER_MS,
            "participant_timestamp_ns": None,
            "trf_timestamp_ns": None if trft is None else trft * NS_PER_MS, "price": p,
            "size": float(s), "exchange": x, "tape": z, "conditions": c, "id": i,
            "sequence_number": q, "trf_id": trfi, "correction": None, "source": LIVE,
            "received_ns": received_ns,
        }
    return _trade_checked(ev, received_ns)


def quote_from_q(ev: dict[str, Any], received_ns: int | None) -> Record:
    g = ev.get
    sym = g("sym")
    t = g("t")
    bp = g("bp")
    bs = g("bs")
    ap = g("ap")
    as_ = g("as")
    q = g("q")
    bx = g("bx")
    ax = g("ax")
    z = g("z")
    c = g("c")
    ind = g("i")
    if (sym.__class__ is str and sym and t.__class__ is int and bp.__class__ is float
            and ap.__class__ is float and bs.__class__ is int and as_.__class__ is int
            and q.__class__ is int and (bx is None or bx.__class__ is int)
            and (ax is None or ax.__class__ is int) and (z is None or z.__class__ is int)):
        if c is None:
            c = []
        elif c.__class__ is int:
            c = [c]
        else:
            return _quote_checked(ev, received_ns)
        if ind is None:
            ind = []
        elif ind.__class__ is list:
            for v in ind:
                if v.__class__ is not int:
                    return _quote_checked(ev, received_ns)
        else:
            return _quote_checked(ev, received_ns)
        return {
            "symbol": sym, "sip_timestamp_ns": t * NS_PER_MS,
            "participant_timestamp_ns": None, "trf_timestamp_ns": None, "bid_price": bp,
            "bid_size": float(bs), "bid_exchange": bx, "ask_price": ap,
            "ask_size": float(as_), "ask_exchange": ax, "conditions": c, "indicators": ind,
            "sequence_number": q, "tape": z, "source": LIVE, "received_ns": received_ns,
        }
    return _quote_checked(ev, received_ns)


def bar_from_am(ev: dict[str, Any], received_ns: int | None) -> Record:
    # Bars are one per symbol per minute: no fast path needed.
    return _bar_checked(ev, received_ns)


_MAPPERS: dict[str, tuple[str, Callable[[dict[str, Any], int | None], Record]]] = {
    "AM": ("bar", bar_from_am),
    "T": ("trade", trade_from_t),
    "Q": ("quote", quote_from_q),
}


def record_from_ws_event(ev: dict[str, Any], received_ns: int | None) -> tuple[str, Record]:
    """Map one WS event object to ``(kind, record)``; raise :class:`MappingError` if bad."""
    try:
        kind, mapper = _MAPPERS[ev["ev"]]
    except KeyError:
        if type(ev) is not dict:
            raise MappingError(f"event must be a JSON object, got {type(ev).__name__}") from None
        if "ev" not in ev:
            raise MappingError("event without 'ev' field") from None
        code = repr(ev["ev"])
        raise MappingError(f"unknown event type ev={code[:20]}") from None
    except TypeError:  # unhashable ev value, or ev not a mapping
        raise MappingError("event must be a JSON object with a string 'ev'") from None
    return kind, mapper(ev, received_ns)


def event_timestamp_ns(kind: str, record: Record) -> int:
    """The market time of a record: bar end for bars, SIP time for trades and quotes."""
    return record["end_ns"] if kind == "bar" else record["sip_timestamp_ns"]
