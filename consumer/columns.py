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
    MAX_CODES,
    NS,
    NULL_INT,
    RecordError,
    bucket_key,
    on_january_first,
    slot_seconds,
)
from schemas.spec import Column, Kind, KindSpec, spec

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
                            Kind.BAR)

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


def _bar_widths(cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """(row slot width in seconds, valid mask) per bar: live bars go to 1Min buckets
    (as in :func:`consumer.buckets.bucket_key`), backfilled ones to their timeframe's."""
    tf = np.where(cols["source"] == "live", "1Min", cols["timeframe"]).astype(object)
    slots = [slot_seconds(t) for t in tf.tolist()]
    ok = np.array([s > 0 for s in slots], dtype=bool)
    return np.array([s or 60 for s in slots], dtype=np.int64), ok


def _column(kind: Kind, column: Column, col: Any, symbols: tuple[str, ...],
            cols: Columns) -> tuple[np.ndarray, np.ndarray | None]:
    """(stored values, valid mask or None) of one column, the vectorised twin of
    :func:`consumer.buckets.row_builder`'s checks."""
    check, absent = column.check, column.absent
    if check in ("epoch", "nanoseconds", "timestamp") and absent is None:
        v = np.asarray(col, dtype=np.int64)
        ok = _ts_ok(v)
        if check == "nanoseconds":
            return v % NS, ok
        if check == "timestamp":
            return v, ok
        if kind.variable:
            return v // NS, ok
        width, ok_width = _bar_widths(cols)
        epoch = v // NS // width * width
        daily = width == DAY_S
        if daily.any():
            ok = ok & ~(daily & on_january_first(epoch))
        return epoch, ok & ok_width
    if check == "timestamp":
        assert absent is not None
        v, present = _filled(col, absent)
        return np.where(present, v, absent), ~present | _ts_ok(v)
    if check in ("price", "side_price", "size", "number"):
        given: np.ndarray | None = None  # rows with a value, for a column that takes nulls
        if absent is not None:
            v, given = _filled(col, absent)
            v = np.where(given, v.astype(np.float64), absent)
        else:
            v = np.asarray(col, dtype=np.float64)
        if check == "price":
            ok = np.isfinite(v)
        elif check == "side_price":  # a one-sided quote has a NaN price on its empty side
            ok = ~np.isinf(v)
        elif check == "size":
            ok = np.isfinite(v) & (v >= 0)
        else:
            return v, None
        return v, ok if given is None else ~given | ok
    if check in ("id32", "count"):
        v, present = _filled(col, NULL_INT if absent is None else absent)
        v = v.astype(np.int64)
        ok = (v >= 0) & (v < _I31) if check == "id32" else v >= 0
        if absent is None:
            return v, ok
        return np.where(present, v, absent), ~present | ok
    if check == "codes":
        return _codes(col)
    if check == "flag":
        return np.asarray(col, dtype=bool).astype(np.int8), None
    if check == "enum":
        values = np.asarray(col, dtype=object)
        out = np.zeros(len(values), dtype=np.int64)
        ok = np.zeros(len(values), dtype=bool)
        for i, symbol in enumerate(symbols):
            is_symbol = values == symbol
            out[is_symbol] = i
            ok |= is_symbol
        return out, ok
    raise ValueError(f"column {column.name}: unknown check {check!r}")


def rows_of(kind_spec: KindSpec, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """(structured rows, valid mask) of one kind's decoded columns."""
    kind = kind_spec.kind
    n = len(cols[kind_spec.fields[0].name])
    out = np.empty(n, dtype=kind_spec.dtype)
    ok = np.ones(n, dtype=bool)
    symbols = {f.name: f.symbols for f in kind_spec.fields}
    for name, column in zip(kind_spec.column_fields, kind_spec.columns, strict=True):
        values, valid = _column(kind, column, cols[name], symbols[name], cols)
        out[column.name] = values
        if valid is not None:
            ok &= valid
    return out, ok


def build(kind: str, cols: Columns, ids: BucketIds, kind_spec: KindSpec | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, bucket id per row, ok mask) for one kind's decoded columns; ``kind_spec``:
    another specification of ``kind`` (default: the package's)."""
    rows, ok = rows_of(spec(kind) if kind_spec is None else kind_spec, cols)
    bucket = ids.for_bars(cols) if kind == Kind.BAR else ids.for_symbols(kind, cols["symbol"])
    return rows, bucket, ok & (bucket >= 0)
