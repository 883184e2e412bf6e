"""Decoded columns -> MarketStore rows, vectorised (pure): the consumer's fast path.

``schemas.batch`` decodes a whole poll into numpy columns per kind; this turns them into the
structured rows of :mod:`consumer.buckets` for every valid row at once, with the same rules
and the same validation as :func:`consumer.buckets.to_row` (which stays the reference: rows
flagged bad here go through it one by one, so a poison message gets the exact same error and
dead-letter treatment either way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from consumer.buckets import (
    _CODE_BITS,
    _CODE_MAX,
    _MAX_TS,
    DAY_S,
    DTYPES,
    MAX_CODES,
    NS,
    NULL_INT,
    RecordError,
    bucket_key,
    on_january_first,
    slot_seconds,
)

Columns = dict[str, Any]
_I31 = 1 << 31


class BucketIds:
    """Stable small integers for bucket keys (grouping by int is far cheaper than by str)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self._by_symbol: dict[str, dict[str, int]] = {}  # kind -> symbol -> id (-1: unkeyable)
        self._by_bar: dict[tuple[str, str, str], int] = {}  # (symbol, timeframe, source) -> id

    def id_of(self, tbk: str) -> int:
        got = self._ids.get(tbk)
        if got is None:
            got = self._ids[tbk] = len(self.names)
            self.names.append(tbk)
        return got

    def for_symbols(self, kind: str, symbols: np.ndarray) -> np.ndarray:
        """Bucket id per row for trades/quotes (-1 where the symbol cannot be keyed)."""
        return self._cached(self._by_symbol.setdefault(kind, {}), symbols.tolist(),
                            lambda s: {"symbol": s}, kind)

    def for_bars(self, cols: Columns) -> np.ndarray:
        """Bucket id per row for bars (-1 where symbol or timeframe cannot be keyed)."""
        keys = list(zip(cols["symbol"].tolist(), cols["timeframe"].tolist(),
                        cols["source"].tolist(), strict=True))
        return self._cached(self._by_bar, keys,
                            lambda k: {"symbol": k[0], "timeframe": k[1], "source": k[2]},
                            "bar")

    def _cached(self, cache: dict[Any, int], keys: list[Any],
                record: Callable[[Any], dict[str, Any]], kind: str) -> np.ndarray:
        """Ids of ``keys`` through ``cache``; a miss is keyed once (``bucket_key``)."""
        get = cache.get
        out = np.fromiter([get(k, -2) for k in keys], dtype=np.int64, count=len(keys))
        for i in np.flatnonzero(out == -2).tolist():
            k = keys[i]
            got = cache.get(k)
            if got is None:
                try:
                    got = self.id_of(bucket_key(kind, record(k)))
                except RecordError:
                    got = -1
                cache[k] = got
            out[i] = got
        return out


def _filled(col: Any, fill: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values with nulls filled, present mask) of a plain or masked column."""
    if isinstance(col, np.ma.MaskedArray):
        return np.ma.filled(col, fill), ~np.ma.getmaskarray(col)
    arr = np.asarray(col)
    return arr, np.ones(len(arr), dtype=bool)


def _ts_ok(v: np.ndarray) -> np.ndarray:
    return (v > 0) & (v < _MAX_TS)


def _opt_int(col: Any) -> tuple[np.ndarray, np.ndarray]:
    v, present = _filled(col, NULL_INT)
    ok = ~present | ((v >= 0) & (v < _I31))
    return np.where(present, v, NULL_INT), ok


def _opt_ts(col: Any) -> tuple[np.ndarray, np.ndarray]:
    v, present = _filled(col, NULL_INT)
    return np.where(present, v, NULL_INT), ~present | _ts_ok(v)


def _opt_float(col: Any) -> np.ndarray:
    v, present = _filled(col, np.nan)
    return np.where(present, v.astype(np.float64), np.nan)


def _codes(col: Any) -> tuple[np.ndarray, np.ndarray]:
    """Packed condition codes (see buckets.pack_codes) and a valid mask."""
    offsets = np.asarray(col.offsets, dtype=np.int64)
    values = np.asarray(col.values, dtype=np.int64)
    counts = np.diff(offsets)
    ok = counts <= MAX_CODES
    if len(values):
        bad_value = (values < 0) | (values > _CODE_MAX)
        if bad_value.any():
            row_of_value = np.repeat(np.arange(len(counts)), counts)
            ok &= ~np.bincount(row_of_value, weights=bad_value, minlength=len(counts)).astype(bool)
    packed = np.zeros(len(counts), dtype=np.uint64)
    starts = offsets[:-1]
    for j in range(MAX_CODES):
        has = ok & (counts > j)
        if not has.any():
            break
        code = np.zeros(len(counts), dtype=np.uint64)
        code[has] = (values[starts[has] + j] + 1).astype(np.uint64)
        packed |= code << np.uint64(_CODE_BITS * j)
    return packed.view(np.int64), ok


def _finite(v: np.ndarray) -> np.ndarray:
    return np.isfinite(v)


def trade_rows(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    n = len(cols["sip_timestamp_ns"])
    out = np.empty(n, dtype=DTYPES["TRADE"])
    sip = np.asarray(cols["sip_timestamp_ns"], dtype=np.int64)
    price = np.asarray(cols["price"], dtype=np.float64)
    size = np.asarray(cols["size"], dtype=np.float64)
    exchange = np.asarray(cols["exchange"], dtype=np.int64)
    seq = np.asarray(cols["sequence_number"], dtype=np.int64)
    tape, ok_tape = _opt_int(cols["tape"])
    trf_id, ok_trf = _opt_int(cols["trf_id"])
    corr, ok_corr = _opt_int(cols["correction"])
    part, ok_part = _opt_ts(cols["participant_timestamp_ns"])
    trft, ok_trft = _opt_ts(cols["trf_timestamp_ns"])
    codes, ok_codes = _codes(cols["conditions"])
    ok = (_ts_ok(sip) & _finite(price) & _finite(size) & (size >= 0) & (exchange >= 0)
          & (exchange < _I31) & (seq >= 0) & ok_tape & ok_trf & ok_corr & ok_part & ok_trft
          & ok_codes)
    out["Epoch"], out["Nanoseconds"] = sip // NS, sip % NS
    out["Price"], out["Size"], out["Exchange"], out["Tape"] = price, size, exchange, tape
    out["Conditions"], out["SequenceNumber"], out["TrfId"] = codes, seq, trf_id
    out["Correction"], out["SipTimestamp"] = corr, sip
    out["ParticipantTimestamp"], out["TrfTimestamp"] = part, trft
    return out, ok


def quote_rows(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    n = len(cols["sip_timestamp_ns"])
    out = np.empty(n, dtype=DTYPES["QUOTE"])
    sip = np.asarray(cols["sip_timestamp_ns"], dtype=np.int64)
    bp = np.asarray(cols["bid_price"], dtype=np.float64)
    ap = np.asarray(cols["ask_price"], dtype=np.float64)
    bs = np.asarray(cols["bid_size"], dtype=np.float64)
    asz = np.asarray(cols["ask_size"], dtype=np.float64)
    seq = np.asarray(cols["sequence_number"], dtype=np.int64)
    bx, ok_bx = _opt_int(cols["bid_exchange"])
    ax, ok_ax = _opt_int(cols["ask_exchange"])
    tape, ok_tape = _opt_int(cols["tape"])
    part, ok_part = _opt_ts(cols["participant_timestamp_ns"])
    trft, ok_trft = _opt_ts(cols["trf_timestamp_ns"])
    cond, ok_cond = _codes(cols["conditions"])
    ind, ok_ind = _codes(cols["indicators"])
    # a one-sided quote has a NaN price on its empty side (backfill.mapping)
    ok = (_ts_ok(sip) & ~np.isinf(bp) & ~np.isinf(ap) & _finite(bs) & _finite(asz) & (bs >= 0)
          & (asz >= 0) & (seq >= 0) & ok_bx & ok_ax & ok_tape & ok_part & ok_trft & ok_cond
          & ok_ind)
    out["Epoch"], out["Nanoseconds"] = sip // NS, sip % NS
    out["BidPrice"], out["AskPrice"], out["BidSize"], out["AskSize"] = bp, ap, bs, asz
    out["BidExchange"], out["AskExchange"], out["Conditions"] = bx, ax, cond
    out["Indicators"], out["SequenceNumber"], out["Tape"] = ind, seq, tape
    out["SipTimestamp"], out["ParticipantTimestamp"], out["TrfTimestamp"] = sip, part, trft
    return out, ok


def bar_rows(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    n = len(cols["start_ns"])
    out = np.empty(n, dtype=DTYPES["OHLCV"])
    start = np.asarray(cols["start_ns"], dtype=np.int64)
    source = cols["source"]
    tf = np.where(source == "live", "1Min", cols["timeframe"]).astype(object)
    slots = [slot_seconds(t) for t in tf.tolist()]
    tf_ok = np.array([s > 0 for s in slots], dtype=bool)
    width = np.array([s or 60 for s in slots], dtype=np.int64)
    end, ok_end = _opt_ts(cols["end_ns"])
    trades, present = _filled(cols["trades"], NULL_INT)
    ok_trades = ~present | (trades >= 0)
    prices = {c: np.asarray(cols[c], dtype=np.float64) for c in ("open", "high", "low", "close")}
    volume = np.asarray(cols["volume"], dtype=np.float64)
    ok = _ts_ok(start) & tf_ok & ok_end & ok_trades & _finite(volume) & (volume >= 0)
    for v in prices.values():
        ok &= _finite(v)
    out["Epoch"] = start // NS // width * width
    daily = width == DAY_S
    if daily.any():
        ok &= ~(daily & on_january_first(out["Epoch"]))
    out["Open"], out["High"] = prices["open"], prices["high"]
    out["Low"], out["Close"], out["Volume"] = prices["low"], prices["close"], volume
    out["VWAP"] = _opt_float(cols["vwap"])
    out["Trades"] = np.where(present, trades, NULL_INT)
    out["AccumulatedVolume"] = _opt_float(cols["accumulated_volume"])
    out["OfficialOpen"] = _opt_float(cols["official_open"])
    out["DayVWAP"] = _opt_float(cols["day_vwap"])
    out["AverageTradeSize"] = _opt_float(cols["average_trade_size"])
    out["OTC"] = np.asarray(cols["otc"], dtype=bool).astype(np.int8)
    out["Source"] = np.where(source == "live", 0, 1)
    out["StartNs"], out["EndNs"] = start, end
    return out, ok


ROW_BUILDERS = {"trade": trade_rows, "quote": quote_rows, "bar": bar_rows}


def build(kind: str, cols: Columns, ids: BucketIds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, bucket id per row, ok mask) for one kind's decoded columns."""
    rows, ok = ROW_BUILDERS[kind](cols)
    bucket = ids.for_bars(cols) if kind == "bar" else ids.for_symbols(kind, cols["symbol"])
    return rows, bucket, ok & (bucket >= 0)
