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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from common.timeframes import TimeframeError, parse_timeframe
from schemas.keys import symbol_key

Record = dict[str, Any]

TRADE_TIMEFRAME = "1Sec"
QUOTE_TIMEFRAME = "1Min"
KEY_CATEGORY = "Symbol/Timeframe/AttributeGroup"

NS = 1_000_000_000
NULL_INT = -1
MAX_CODES = 4
_CODE_BITS = 16
_CODE_MAX = (1 << _CODE_BITS) - 2  # stored as code + 1 in 16 bits

OHLCV_DTYPE = np.dtype([
    ("Epoch", "<i8"), ("Open", "<f8"), ("High", "<f8"), ("Low", "<f8"), ("Close", "<f8"),
    ("Volume", "<f8"), ("VWAP", "<f8"), ("Trades", "<i8"), ("AccumulatedVolume", "<f8"),
    ("OfficialOpen", "<f8"), ("DayVWAP", "<f8"), ("AverageTradeSize", "<f8"),
    ("OTC", "<i1"), ("Source", "<i1"), ("StartNs", "<i8"), ("EndNs", "<i8"),
])
TRADE_DTYPE = np.dtype([
    ("Epoch", "<i8"), ("Nanoseconds", "<i4"), ("Price", "<f8"), ("Size", "<f8"),
    ("Exchange", "<i4"), ("Tape", "<i4"), ("Conditions", "<i8"), ("SequenceNumber", "<i8"),
    ("TrfId", "<i4"), ("Correction", "<i4"), ("SipTimestamp", "<i8"),
    ("ParticipantTimestamp", "<i8"), ("TrfTimestamp", "<i8"),
])
QUOTE_DTYPE = np.dtype([
    ("Epoch", "<i8"), ("Nanoseconds", "<i4"), ("BidPrice", "<f8"), ("AskPrice", "<f8"),
    ("BidSize", "<f8"), ("AskSize", "<f8"), ("BidExchange", "<i4"), ("AskExchange", "<i4"),
    ("Conditions", "<i8"), ("Indicators", "<i8"), ("SequenceNumber", "<i8"), ("Tape", "<i4"),
    ("SipTimestamp", "<i8"), ("ParticipantTimestamp", "<i8"), ("TrfTimestamp", "<i8"),
])
DTYPES: dict[str, np.dtype] = {"OHLCV": OHLCV_DTYPE, "TRADE": TRADE_DTYPE, "QUOTE": QUOTE_DTYPE}
ATTR_GROUP: dict[str, str] = {"bar": "OHLCV", "trade": "TRADE", "quote": "QUOTE"}
VARIABLE: dict[str, bool] = {"OHLCV": False, "TRADE": True, "QUOTE": True,
                             "TRADEREPAIR": True, "QUOTEREPAIR": True,
                             "TRADEREPAIRED": False, "QUOTEREPAIRED": False}

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
    if kind == "trade":
        return f"{symbol}/{TRADE_TIMEFRAME}/TRADE"
    if kind == "quote":
        return f"{symbol}/{QUOTE_TIMEFRAME}/QUOTE"
    if kind == "bar":
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


def _ts(record: Record, name: str, required: bool = True) -> int:
    value = record.get(name)
    if value is None and not required:
        return NULL_INT
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < _MAX_TS:
        raise RecordError(f"{name} {value!r} is not a Unix nanosecond timestamp")
    return value


def _price(record: Record, name: str) -> float:
    value = record.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise RecordError(f"{name} {value!r} is not a finite number")
    return float(value)


def _quote_price(record: Record, name: str) -> float:
    """A quote side's price: finite, or NaN for the side a one-sided quote does not have."""
    value = record.get(name)
    if isinstance(value, float) and math.isnan(value):
        return value
    return _price(record, name)


def _size(record: Record, name: str) -> float:
    value = _price(record, name)
    if value < 0:
        raise RecordError(f"{name} {value!r} is negative")
    return value


def _opt_float(record: Record, name: str) -> float:
    value = record.get(name)
    if value is None:
        return math.nan
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RecordError(f"{name} {value!r} is not a number")
    return float(value)


def _opt_int(record: Record, name: str) -> int:
    value = record.get(name)
    if value is None:
        return NULL_INT
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 31:
        raise RecordError(f"{name} {value!r} is not a non-negative 32-bit integer")
    return value


def _seq(record: Record) -> int:
    value = record.get("sequence_number")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
        raise RecordError(f"sequence_number {value!r} is not a non-negative integer")
    return value


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


def bar_row(record: Record, timeframe: str = "1Min") -> tuple:
    """``Epoch`` is the start floored to the bucket's interval, as MarketStore stores it."""
    start = _ts(record, "start_ns")
    width = slot_seconds(timeframe)
    if not width:
        raise RecordError(f"{timeframe!r} is not a bar timeframe")
    if width == DAY_S and on_january_first(start // NS):
        raise RecordError(f"MarketStore cannot store a {timeframe} bar on 1 January (UTC): "
                          f"start_ns {start}")
    end = _ts(record, "end_ns", required=False)
    trades = record.get("trades")
    if trades is not None and (not isinstance(trades, int) or trades < 0):
        raise RecordError(f"trades {trades!r} is not a non-negative integer")
    return (
        start // NS // width * width, _price(record, "open"), _price(record, "high"),
        _price(record, "low"), _price(record, "close"), _size(record, "volume"),
        _opt_float(record, "vwap"),
        NULL_INT if trades is None else trades, _opt_float(record, "accumulated_volume"),
        _opt_float(record, "official_open"), _opt_float(record, "day_vwap"),
        _opt_float(record, "average_trade_size"), 1 if record.get("otc") else 0,
        0 if record.get("source") == "live" else 1, start, end,
    )


def trade_row(record: Record) -> tuple:
    sip = _ts(record, "sip_timestamp_ns")
    exchange = record.get("exchange")
    if not isinstance(exchange, int) or isinstance(exchange, bool) or not 0 <= exchange < 1 << 31:
        raise RecordError(f"exchange {exchange!r} is not a non-negative integer")
    return (
        sip // NS, sip % NS, _price(record, "price"), _size(record, "size"), exchange,
        _opt_int(record, "tape"), pack_codes(record.get("conditions")), _seq(record),
        _opt_int(record, "trf_id"), _opt_int(record, "correction"), sip,
        _ts(record, "participant_timestamp_ns", required=False),
        _ts(record, "trf_timestamp_ns", required=False),
    )


def quote_row(record: Record) -> tuple:
    sip = _ts(record, "sip_timestamp_ns")
    return (
        sip // NS, sip % NS, _quote_price(record, "bid_price"),
        _quote_price(record, "ask_price"),
        _size(record, "bid_size"), _size(record, "ask_size"), _opt_int(record, "bid_exchange"),
        _opt_int(record, "ask_exchange"), pack_codes(record.get("conditions")),
        pack_codes(record.get("indicators")), _seq(record), _opt_int(record, "tape"), sip,
        _ts(record, "participant_timestamp_ns", required=False),
        _ts(record, "trf_timestamp_ns", required=False),
    )


ROW_BUILDERS = {"bar": bar_row, "trade": trade_row, "quote": quote_row}


def to_row(kind: str, record: Record) -> tuple[str, tuple]:
    """(bucket key, row tuple) for one record, or RecordError for a record that cannot be stored."""
    tbk = bucket_key(kind, record)
    try:
        if kind == "bar":
            return tbk, bar_row(record, tbk.split("/")[1])
        return tbk, ROW_BUILDERS[kind](record)
    except (TypeError, KeyError, OverflowError) as exc:  # a malformed record, not our bug
        raise RecordError(f"{kind} record has a bad field: {exc}") from None


def rows_to_array(attr: str, rows: Iterable[tuple]) -> np.ndarray:
    return np.array(list(rows), dtype=DTYPES[attr])


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
