"""Which trade/quote rows are already in a variable-length bucket (pure, no I/O).

MarketStore appends every variable-length write, so the consumer must never send a row the
bucket already holds. A trade or quote is identified by its symbol (the bucket), its sequence
number and its day; instead of computing a trading day (which needs New York time and breaks
at the day boundary) two rows are the same event when they have the same sequence number and
SIP timestamps at most ``WINDOW_NS`` apart: a live (ms) and a REST (ns) shape of one print differ
by less than a millisecond, while the same sequence number on another day is hours away. Two
distinct events with the same timestamp have different sequence numbers and are both kept.

Per bucket the consumer keeps a :class:`Tail` (a high-water mark) loaded from MarketStore on
first use after an assignment or an error: ``max_ts`` (latest SIP timestamp stored), and
``max_seq``, the largest sequence number among the stored rows whose timestamp is at least
``seq_floor_ts``. A record is certainly new when it is later than ``max_ts + WINDOW_NS``, or when
its window lies above ``seq_floor_ts`` and its sequence number is above ``max_seq`` (the live
path: one comparison, no read). Every other record (a redelivery, a replay, a backfill into an
existing range) goes through :func:`missing_mask` against the rows read back from
:func:`read_ranges` (each record's own window, not the span of the batch), and only what is
missing is appended.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_NS = 1_000_000_000
# Ranges one bucket's dedupe read may have; beyond, the nearest ranges are read as one (fewer
# requests to MarketStore, a few more rows).
MAX_READ_RANGES = 64


@dataclass
class Tail:
    max_ts: int = -1
    max_seq: int = -1
    seq_floor_ts: int = 0  # all stored rows with ts >= this have seq <= max_seq

    @classmethod
    def from_rows(cls, ts: np.ndarray, seq: np.ndarray, complete: bool) -> Tail:
        """From the last rows of a bucket; ``complete`` when they are the whole bucket."""
        if len(ts) == 0:
            return cls()
        floor = 0 if complete else int(ts.min()) + 1
        return cls(int(ts.max()), int(seq.max()), floor)


def first_occurrences(ts: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Keep-mask dropping later copies (in arrival order) of one event within a batch."""
    return first_occurrences_grouped(np.zeros(len(seq), dtype=np.int64), ts, seq)


def missing_mask(ts: np.ndarray, seq: np.ndarray, stored_ts: np.ndarray,
                 stored_seq: np.ndarray) -> np.ndarray:
    """Mask of the records (ts, seq) that the stored rows do not already hold."""
    if len(stored_seq) == 0:
        return np.ones(len(seq), dtype=bool)
    order = np.argsort(stored_seq, kind="stable")
    s_seq, s_ts = stored_seq[order], stored_ts[order]
    lo = np.searchsorted(s_seq, seq, side="left")
    hi = np.searchsorted(s_seq, seq, side="right")
    out = np.ones(len(seq), dtype=bool)
    for i in np.nonzero(hi > lo)[0]:
        if np.any(np.abs(s_ts[lo[i]:hi[i]] - ts[i]) <= WINDOW_NS):
            out[i] = False
    return out


def merge_ranges(lo: np.ndarray, hi: np.ndarray, max_ranges: int = MAX_READ_RANGES
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive ranges (``lo``, ``hi``) merged where they overlap, sorted; when more than
    ``max_ranges`` remain, the nearest are merged across their gaps until that many are left."""
    if not len(lo):
        return lo, hi
    order = np.argsort(lo, kind="stable")
    lo, reach = lo[order], np.maximum.accumulate(hi[order])
    gaps = lo[1:] - reach[:-1]
    split = np.flatnonzero(gaps > 0)
    keep = max(max_ranges, 1) - 1  # gaps left unread
    if len(split) > keep:
        k = len(split) - keep
        split = np.sort(split[np.argpartition(gaps[split], k - 1)[k:]]) if keep else split[:0]
    starts = np.concatenate(([0], split + 1))
    ends = np.concatenate((split, [len(lo) - 1]))
    return lo[starts], reach[ends]


def read_ranges(ts: np.ndarray, max_ranges: int = MAX_READ_RANGES
                ) -> tuple[np.ndarray, np.ndarray]:
    """The inclusive time ranges (starts, ends) holding every stored row that can be a copy
    of a record at ``ts``: each record's ``WINDOW_NS`` either side, merged where they touch.

    So a read covers what is stored around the records, not what is stored between them (a
    backfill interleaving days 9 and 11 does not read day 10). When that makes more than
    ``max_ranges`` ranges, the nearest are read as one.
    """
    return merge_ranges(ts - WINDOW_NS, ts + WINDOW_NS, max_ranges)


def duplicate_count(ts: np.ndarray, seq: np.ndarray) -> int:
    """How many stored rows repeat an earlier one (MarketStore's WAL replay can cause this)."""
    return int(len(seq) - first_occurrences(ts, seq).sum())


class TailTable:
    """:class:`Tail` for many buckets at once, indexed by bucket id (vectorised batches)."""

    def __init__(self) -> None:
        self.max_ts = np.zeros(0, dtype=np.int64)
        self.max_seq = np.zeros(0, dtype=np.int64)
        self.floor = np.zeros(0, dtype=np.int64)
        self.loaded = np.zeros(0, dtype=bool)

    def _grow(self, n: int) -> None:
        if n <= len(self.loaded):
            return
        size = max(n, 2 * len(self.loaded), 64)
        extra = size - len(self.loaded)
        self.max_ts = np.concatenate([self.max_ts, np.full(extra, -1, dtype=np.int64)])
        self.max_seq = np.concatenate([self.max_seq, np.full(extra, -1, dtype=np.int64)])
        self.floor = np.concatenate([self.floor, np.zeros(extra, dtype=np.int64)])
        self.loaded = np.concatenate([self.loaded, np.zeros(extra, dtype=bool)])

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """The distinct ids among ``ids`` without a loaded tail."""
        uniq = np.unique(ids)
        self._grow(int(uniq.max()) + 1 if len(uniq) else 0)
        return uniq[~self.loaded[uniq]]

    def set(self, bucket_id: int, tail: Tail) -> None:
        self._grow(bucket_id + 1)
        self.max_ts[bucket_id], self.max_seq[bucket_id] = tail.max_ts, tail.max_seq
        self.floor[bucket_id], self.loaded[bucket_id] = tail.seq_floor_ts, True

    def get(self, bucket_id: int) -> Tail:
        return Tail(int(self.max_ts[bucket_id]), int(self.max_seq[bucket_id]),
                    int(self.floor[bucket_id]))

    def drop(self, bucket_ids: list[int]) -> None:
        ids = [i for i in bucket_ids if i < len(self.loaded)]
        self.loaded[ids] = False

    def clear(self) -> None:
        self.loaded[:] = False

    def certainly_new(self, ids: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> np.ndarray:
        after = ts > self.max_ts[ids] + WINDOW_NS
        above = (ts - WINDOW_NS >= self.floor[ids]) & (seq > self.max_seq[ids])
        return after | above

    def update(self, ids: np.ndarray, lo: np.ndarray, hi: np.ndarray, seq_min: np.ndarray,
               seq_max: np.ndarray) -> None:
        """Per written bucket (distinct ``ids``): its rows' time and sequence range."""
        max_ts, max_seq = self.max_ts[ids], self.max_seq[ids]
        reset = (lo > max_ts + WINDOW_NS) | ((lo > max_ts) & (seq_min < max_seq))
        self.floor[ids] = np.where(reset, max_ts + 1, self.floor[ids])
        self.max_seq[ids] = np.where(reset, seq_max, np.maximum(max_seq, seq_max))
        self.max_ts[ids] = np.maximum(max_ts, hi)


def by_bucket(ids: np.ndarray) -> np.ndarray:
    """Row indexes grouped by bucket id, in arrival order within each bucket. numpy's
    stable sort is a radix sort for 16-bit integers (15x faster than for int64 here), and
    bucket ids are small."""
    if len(ids) and ids.min() >= 0 and ids.max() < 1 << 16:
        return np.argsort(ids.astype(np.uint16), kind="stable")
    return np.argsort(ids, kind="stable")


def _as_void(rows: np.ndarray) -> np.ndarray:
    return rows.view(np.dtype((np.void, rows.dtype.itemsize)))


def take_rows(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``rows[index]`` for a structured array, as one opaque fixed-size item per row: numpy
    copies structured items field by field, ten times slower than the same bytes."""
    return _as_void(rows)[index].view(rows.dtype)


def concat_rows(chunks: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate`` of structured arrays of one dtype, copied as opaque items."""
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate([_as_void(c) for c in chunks]).view(chunks[0].dtype)


def bucket_time_order(ids: np.ndarray, ts: np.ndarray, grouped: np.ndarray) -> np.ndarray:
    """``np.lexsort((ts, ids))``, from :func:`by_bucket`'s ``grouped``: each bucket's rows
    come from one partition, so they usually arrive in time order already and the grouped
    order is the answer; otherwise it sorts."""
    i, t = ids[grouped], ts[grouped]
    if not np.any((i[1:] == i[:-1]) & (t[1:] < t[:-1])):
        return grouped
    return np.lexsort((ts, ids))


def first_occurrences_grouped(ids: np.ndarray, ts: np.ndarray, seq: np.ndarray,
                              grouped: np.ndarray | None = None) -> np.ndarray:
    """:func:`first_occurrences` within each bucket id, for many buckets at once.

    ``grouped`` (:func:`by_bucket` of ``ids``) allows a shortcut: when sequence numbers
    rise strictly within every bucket in arrival order (a live stream), no two rows can be
    copies of one event and there is nothing to sort."""
    keep = np.ones(len(seq), dtype=bool)
    if len(seq) < 2:
        return keep
    if grouped is not None:
        i, s = ids[grouped], seq[grouped]
        if not np.any((i[1:] == i[:-1]) & (s[1:] <= s[:-1])):
            return keep
    # Sorted by time within (bucket, sequence number), the copies of one event are adjacent
    # even when the same number of another day arrived between them (a replay or a backfill
    # spanning days beside live data); of each run of copies the first to arrive is kept.
    order = np.lexsort((ts, seq, ids))
    i, s, t = ids[order], seq[order], ts[order]
    copy = (i[1:] == i[:-1]) & (s[1:] == s[:-1]) & (t[1:] - t[:-1] <= WINDOW_NS)
    starts = np.flatnonzero(np.concatenate(([True], ~copy)))
    keep[:] = False
    keep[np.minimum.reduceat(order, starts)] = True
    return keep
