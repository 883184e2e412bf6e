"""Records -> MarketStore rows: bucket keys, column layouts and validation (pure, no I/O).

Buckets (``SYMBOL/TIMEFRAME/ATTRGROUP``):

- bars: live bars to ``{SYMBOL}/1Min/OHLCV``, backfilled bars to ``{SYMBOL}/{timeframe}/OHLCV``
  (any timeframe MarketStore stores, :mod:`common.timeframes`: ``15Min``, ``4H``, ``1D``
  ...); fixed length, one row per bar start (a rewrite of the same start overwrites
  it).
- trades: ``{SYMBOL}/1Sec/TRADE``; quotes: ``{SYMBOL}/1Min/QUOTE``; both variable length with
  ``Nanoseconds`` (MarketStore appends every write to the interval's rows).

Columns keep the legacy Polygon plugin's names (``Open High Low Close Volume``, ``Price Size``,
``BidPrice AskPrice BidSize AskSize``) and add what Massive sends beyond them. Types hold every
value without loss: sizes and volumes are ``f8`` (fractional shares), every timestamp is also
kept as an ``i8`` of Unix nanoseconds (``SipTimestamp`` ...), because MarketStore stores the
sub-interval part of a variable-length row as 32-bit interval ticks and rebuilds
``Epoch``/``Nanoseconds`` through float arithmetic (a few ns off for a 1Min QUOTE bucket) and
stores a fixed-length row's epoch as the interval index (a 1D bar starting at midnight New York
time reads back at midnight UTC).

Absent optional values: ``-1`` in integer columns (ids, tapes and timestamps are never
negative), ``NaN`` in float columns.

Conditions (trade ``c``/``conditions``, quote ``conditions`` and ``indicators``) are packed
losslessly into one ``i8`` each: up to 4 codes, 16 bits per code, first code in the lowest
bits, each stored as ``code + 1`` so that 0 means "no more codes". Order and repeats survive;
:func:`unpack_codes` inverts it. A record with more than 4 codes or a code outside 0..65534
cannot be stored losslessly and is rejected (dead-letter topic), never truncated.

Symbols: ``/`` becomes ``.`` (legacy plugin; :mod:`schemas.keys`, shared with the Kafka key).
A symbol MarketStore cannot key safely (empty, ``:`` which splits a bucket key, ``,`` and
``*`` which mean "several"/"all" in a query, path components like ``..``, whitespace,
non-ASCII, longer than 40) raises :class:`RecordError`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from common.timeframes import TimeframeError, parse_timeframe
from schemas.keys import symbol_key
from schemas.mapgen import FunctionSource
from schemas.spec import Kind, KindSpec, spec

Record = dict[str, Any]

TRADE_TIMEFRAME = "1Sec"
QUOTE_TIMEFRAME = "1Min"
KEY_CATEGORY = "Symbol/Timeframe/AttributeGroup"

NS = 1_000_000_000
NULL_INT = -1
MAX_CODES = 4
_CODE_BITS = 16
_CODE_MAX = (1 << _CODE_BITS) - 2  # stored as code + 1 in 16 bits

# The row layouts are the schemas' (schemas.spec): one column list per kind, in the order
# existing buckets were written with.
DTYPES: dict[str, np.dtype] = {k.attr_group: spec(k).dtype for k in Kind}
# for callers that index by a kind string (consumer.service); new code reads Kind.attr_group
# the sink's repair buckets: shadows are variable-length like their source, markers fixed
VARIABLE: dict[str, bool] = {
    **{k.attr_group: k.variable for k in Kind},
    **{f"{k.attr_group}REPAIR": True for k in Kind if k.variable},
    **{f"{k.attr_group}REPAIRED": False for k in Kind if k.variable},
}

_SYMBOL_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,39}")
_MAX_TS = 4_102_444_800 * NS  # 2100-01-01: anything later is a unit mistake, not a timestamp


class RecordError(ValueError):
    """A record that cannot be stored (bad value, unkeyable symbol): goes to the dead letter."""


def bucket_symbol(symbol: str) -> str:
    """The MarketStore symbol for a Massive ticker (:func:`schemas.keys.symbol_key`, so
    a bucket's records share one Kafka key), or RecordError."""
    if not isinstance(symbol, str):
        raise RecordError(f"symbol is not a string: {symbol!r}")
    mapped = symbol_key(symbol)
    if not _SYMBOL_OK.fullmatch(mapped) or ".." in mapped:
        raise RecordError(f"symbol {symbol!r} cannot be a MarketStore key")
    return mapped


def bucket_key(kind: str, record: Record) -> str:
    """``SYMBOL/TIMEFRAME/ATTRGROUP`` of the bucket a record goes to."""
    symbol = bucket_symbol(record.get("symbol"))  # type: ignore[arg-type]
    if kind == Kind.TRADE:
        return f"{symbol}/{TRADE_TIMEFRAME}/TRADE"
    if kind == Kind.QUOTE:
        return f"{symbol}/{QUOTE_TIMEFRAME}/QUOTE"
    if kind == Kind.BAR:
        if record.get("source") == "live":
            return f"{symbol}/1Min/OHLCV"
        timeframe = record.get("timeframe")
        try:
            name = parse_timeframe(timeframe).name
        except TimeframeError as exc:
            raise RecordError(f"bar timeframe: {exc}") from None
        return f"{symbol}/{name}/OHLCV"
    raise RecordError(f"unknown record kind {kind!r}")


def attr_group(tbk: str) -> str:
    return tbk.rsplit("/", 1)[1]


def pack_codes(codes: Sequence[int] | None) -> int:
    """Up to 4 codes in one int64, 16 bits each (code + 1), first code lowest; see module doc."""
    if not codes:
        return 0
    if len(codes) > MAX_CODES:
        raise RecordError(f"{len(codes)} condition codes, at most {MAX_CODES} can be stored")
    packed = 0
    for i, code in enumerate(codes):
        if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= _CODE_MAX:
            raise RecordError(f"condition code {code!r} outside 0..{_CODE_MAX}")
        packed |= (code + 1) << (_CODE_BITS * i)
    # the 4th code may set bit 63: keep it a valid signed int64
    return packed - (1 << 64) if packed >= 1 << 63 else packed


def unpack_codes(packed: int) -> list[int]:
    value = int(packed) & ((1 << 64) - 1)
    codes = []
    while value:
        codes.append((value & 0xFFFF) - 1)
        value >>= _CODE_BITS
    return codes


def _timestamp(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < _MAX_TS:
        raise RecordError(f"{name} {value!r} is not a Unix nanosecond timestamp")
    return value


def _price(name: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise RecordError(f"{name} {value!r} is not a finite number")
    return float(value)


def _side_price(name: str, value: Any) -> float:
    """A quote side's price: finite, or NaN for the side a one-sided quote does not have."""
    if isinstance(value, float) and math.isnan(value):
        return value
    return _price(name, value)


def _size(name: str, value: Any) -> float:
    value = _price(name, value)
    if value < 0:
        raise RecordError(f"{name} {value!r} is negative")
    return value


def _number(name: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{name} {value!r} is not a number")
    return float(value)


def _id32(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
        raise RecordError(f"{name} {value!r} is not a non-negative 32-bit integer")
    return value


def _count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise RecordError(f"{name} {value!r} is not a non-negative integer")
    return value


# column check (schemas.spec) -> (field name, value) -> stored value, or RecordError
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "timestamp": _timestamp, "price": _price, "side_price": _side_price, "size": _size,
    "number": _number, "id32": _id32, "count": _count,
}


DAY_S = 86400


@functools.lru_cache(maxsize=1024)
def slot_seconds(timeframe: object) -> int:
    """Width of the row slot a bar of ``timeframe`` is stored in; 0: not a bar timeframe.

    MarketStore keeps one row per slot of ``timeframe`` within a day, so the bar's start
    is floored to that.
    """
    try:
        return parse_timeframe(timeframe).seconds
    except TimeframeError:
        return 0


def on_january_first(epoch_s: np.ndarray | int) -> np.ndarray | bool:
    """True for epochs on 1 January (UTC).

    MarketStore v4.1 accepts a 1D row on that day but never returns it (its daily file
    has no slot for it: seen with 00:00 and 05:00 UTC, every year). Such a bar goes to the
    dead-letter topic instead of vanishing; US markets are closed on 1 January, so real
    daily bars never fall there.
    """
    days = np.asarray(epoch_s, dtype="datetime64[s]").astype("datetime64[D]")
    first = days.astype("datetime64[Y]").astype("datetime64[D]")
    result = days == first
    return bool(result) if np.ndim(result) == 0 else result


def _fixed_epoch(name: str, record: Record, timeframe: str) -> int:
    """``Epoch`` of a fixed-length row: the start floored to the bucket's interval, as
    MarketStore stores it."""
    start = _timestamp(name, record.get(name))
    width = slot_seconds(timeframe)
    if not width:
        raise RecordError(f"{timeframe!r} is not a bar timeframe")
    if width == DAY_S and on_january_first(start // NS):
        raise RecordError(f"MarketStore cannot store a {timeframe} bar on 1 January (UTC): "
                          f"start_ns {start}")
    return start // NS // width * width


def _enum_index(name: str, symbols: tuple[str, ...]) -> Callable[[Any], int]:
    index = {symbol: i for i, symbol in enumerate(symbols)}

    def enum(value: Any) -> int:
        try:
            return index[value]
        except (KeyError, TypeError):
            raise RecordError(f"{name} {value!r} is none of {', '.join(symbols)}") from None
    return enum


_TIME_CHECKS = ("epoch", "nanoseconds", "timestamp")


def row_builder(kind_spec: KindSpec) -> Callable[[Record, str], tuple]:
    """``f(record, bucket timeframe) -> row tuple`` in ``kind_spec``'s column order, or
    RecordError for a value its column cannot store (one generated function per kind:
    the per-record path carries whole batches while writers move to a new schema)."""
    src = FunctionSource()
    src.add(1, "g = r.get")
    fields = {f.name: f for f in kind_spec.fields}
    checked: dict[str, str] = {}  # field -> variable holding its checked timestamp
    for name, column in zip(kind_spec.column_fields, kind_spec.columns, strict=True):
        if column.check in _TIME_CHECKS and column.absent is None and name not in checked:
            checked[name] = f"t{len(checked)}"
            src.add(1, f"{checked[name]} = _timestamp({name!r}, g({name!r}))")
    items = []
    for i, (name, column) in enumerate(zip(kind_spec.column_fields, kind_spec.columns,
                                           strict=True)):
        check, absent = column.check, column.absent
        if check == "epoch":
            items.append(f"{checked[name]} // {NS}" if kind_spec.kind.variable
                         else f"_fixed_epoch({name!r}, r, tf)")
        elif check == "nanoseconds":
            items.append(f"{checked[name]} % {NS}")
        elif check == "timestamp" and absent is None:
            items.append(checked[name])
        elif check == "enum":
            enum = src.const(_enum_index(name, fields[name].symbols))
            items.append(f"{enum}(g({name!r}))")
        elif check == "flag":
            items.append(f"(1 if g({name!r}) else 0)")
        elif check == "codes":
            items.append(f"pack_codes(g({name!r}))")
        else:
            value_of = src.const(_CHECKS[check])
            if absent is None:
                items.append(f"{value_of}({name!r}, g({name!r}))")
            else:
                items.append(f"({src.const(absent)} if (x{i} := g({name!r})) is None "
                             f"else {value_of}({name!r}, x{i}))")
    src.add(1, f"return ({', '.join(items)},)")
    helpers = {"_timestamp": _timestamp, "_fixed_epoch": _fixed_epoch, "pack_codes": pack_codes}
    build: Callable[[Record, str], tuple] = src.compile("r, tf", helpers,
                                                       f"{kind_spec.kind}_row")
    return build


_ROWS = {kind: row_builder(spec(kind)) for kind in Kind}


def to_row(kind: str, record: Record, kind_spec: KindSpec | None = None) -> tuple[str, tuple]:
    """(bucket key, row tuple) for one record, or RecordError for a record that cannot be
    stored. ``kind_spec``: another specification of ``kind`` (default: the package's)."""
    tbk = bucket_key(kind, record)
    build = _ROWS[kind] if kind_spec is None else row_builder(kind_spec)  # type: ignore[index]
    try:
        return tbk, build(record, tbk.split("/")[1])
    except (TypeError, KeyError, OverflowError) as exc:  # a malformed record, not our bug
        raise RecordError(f"{kind} record has a bad field: {exc}") from None


def rows_to_array(attr: str, rows: Iterable[tuple], dtype: np.dtype | None = None) -> np.ndarray:
    return np.array(list(rows), dtype=DTYPES[attr] if dtype is None else dtype)


def sort_rows(attr: str, array: np.ndarray) -> np.ndarray:
    """Variable-length rows in time order (MarketStore groups consecutive rows by interval)."""
    if VARIABLE[attr] and len(array) > 1:
        return array[np.argsort(array["SipTimestamp"], kind="stable")]
    if not VARIABLE[attr] and len(array) > 1:
        # the same bar twice in one batch: the later one wins, as a later write would
        _, last = np.unique(array["Epoch"][::-1], return_index=True)
        return array[len(array) - 1 - last]
    return array


def column_names(dtype: np.dtype) -> tuple[str, ...]:
    """The fields of a row dtype (numpy gives None for a plain, unstructured one)."""
    names = dtype.names
    if names is None:
        raise TypeError(f"{dtype} has no columns: not a structured dtype")
    return names


def aligned(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A queried array in our column order (MarketStore returns Nanoseconds last)."""
    out = np.empty(len(array), dtype=dtype)
    for name in column_names(dtype):
        out[name] = array[name]
    return out
