"""The time ranges each bucket was written in lately: what a MarketStore WAL replay can double.

One entry per bucket written within the horizon, so this is the consumer's largest
per-bucket state. Each bucket keeps its spans as flat ``(written at, first ns, last ns)``
triples in one ``array('q')``: a list of three Python ints per span took ~180 bytes, the
triple takes 24. On a day of many rarely traded symbols (each write a span of its own) this
is most of what the consumer's memory grows by after warm-up (bench/day/README.md).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

import numpy as np

from consumer.dedupe import MAX_READ_RANGES, WINDOW_NS, merge_ranges

_NS = 1_000_000_000


class RecentWrites:
    """Per bucket id, the merged time ranges written after ``now - horizon_s``.

    A write that continues the bucket's last range (starts inside it or within two dedupe
    windows of its end: the live path) extends it; any other starts a new range. Past
    :data:`~consumer.dedupe.MAX_READ_RANGES` ranges a bucket's are merged down to half of it
    (each merged range keeps the latest write time of its parts: it is kept the longest).
    """

    def __init__(self, horizon_s: float) -> None:
        self.horizon_ns = int(horizon_s * _NS)
        self._spans: dict[int, array[int]] = {}

    def __len__(self) -> int:
        return len(self._spans)

    def add(self, now_s: float, bucket: int, first_ns: int, last_ns: int) -> None:
        now = int(now_s * _NS)
        spans = self._spans.get(bucket)
        if not spans or spans[-3] < now - self.horizon_ns:
            self._spans[bucket] = array("q", (now, first_ns, last_ns))
        elif spans[-2] <= first_ns <= spans[-1] + 2 * WINDOW_NS:
            spans[-3] = now
            if last_ns > spans[-1]:
                spans[-1] = last_ns
        else:
            spans.extend((now, first_ns, last_ns))
            if len(spans) > 3 * MAX_READ_RANGES:
                self._spans[bucket] = _merged(_live(spans, now - self.horizon_ns))

    def drop(self, bucket: int) -> None:
        self._spans.pop(bucket, None)

    def ranges(self, now_s: float) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(bucket, first ns, last ns) of each bucket's ranges still within the horizon;
        buckets with none left are forgotten."""
        horizon = int(now_s * _NS) - self.horizon_ns
        for bucket, spans in list(self._spans.items()):
            live = _live(spans, horizon)
            if not len(live):
                del self._spans[bucket]
                continue
            if len(live) * 3 != len(spans):
                self._spans[bucket] = _packed(live)
            yield bucket, live[:, 1], live[:, 2]


def _live(spans: array[int], horizon_ns: int) -> np.ndarray:
    rows = np.frombuffer(spans, dtype=np.int64).reshape(-1, 3)
    return rows[rows[:, 0] >= horizon_ns]


def _packed(rows: np.ndarray) -> array[int]:
    out = array("q")
    out.frombytes(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return out


def _merged(rows: np.ndarray) -> array[int]:
    if not len(rows):
        return array("q")
    lo, hi = merge_ranges(rows[:, 1], rows[:, 2], MAX_READ_RANGES // 2)
    merged = np.empty((len(lo), 3), dtype=np.int64)
    merged[:, 0], merged[:, 1], merged[:, 2] = rows[:, 0].max(), lo, hi
    return _packed(merged)
