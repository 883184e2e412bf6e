"""The MarketStore sink: ``add()`` records, ``flush()`` a batch exactly once, verify, repair.

Exactly once in the database:

- Bars are fixed-length rows keyed by their start: writing one again overwrites it with the same
  values, so redelivery and replay are harmless (within a batch the last copy of a bar wins,
  as it would across batches).
- Trades and quotes are appended by MarketStore, so the sink never sends a row its bucket
  already holds: duplicates within a batch are dropped (first in offset order wins, so a replay
  makes the same choice as the live run); each bucket's :class:`~consumer.dedupe.Tail`
  (high-water mark) is loaded from MarketStore on first use after an assignment or an error
  (the last ``tail_rows`` rows); records above it are appended without a read; the others cause
  one read of the bucket's rows in the records' time range (plus the one-second window) and only
  sequence numbers missing there are appended. Each bucket is written by one consumer at a time
  (Kafka key = symbol, so a bucket lives in one partition), which is what makes the cached tail
  the truth.
- MarketStore's own WAL replay after a kill -9 appends the variable-length rows of its last
  checkpoint interval a second time. The sink remembers the time range it wrote per bucket in
  the last ``repair_window_s`` and, after any MarketStore error, and whenever a tail is loaded,
  looks for rows that repeat an earlier (sequence number, time) and rebuilds such a bucket
  deduplicated (read all, destroy, write back): :meth:`MarketStoreSink.repair`.

Durability: :meth:`flush` returns a probe (one row it wrote); the consumer commits offsets only
once the probe reads back (MarketStore makes rows visible only after their WAL group is
written) and the write is older than ``consumer.commit_delay_ms``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from consumer import buckets
from consumer.buckets import DTYPES, NS, VARIABLE, attr_group
from consumer.columns import BucketIds
from consumer.dedupe import WINDOW_NS, Tail, duplicate_count, first_occurrences, missing_mask
from consumer.writer import MarketStoreWriter

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass
class Probe:
    """One written row to read back before committing."""

    tbk: str
    epoch_s: int
    sip_ns: int  # -1 for bars
    seq: int  # -1 for bars


@dataclass
class FlushResult:
    rows_written: dict[str, int] = field(default_factory=dict)  # by kind
    duplicates_dropped: int = 0
    buckets: int = 0
    probe: Probe | None = None
    seconds: float = 0.0


KIND_OF_ATTR = {"OHLCV": "bar", "TRADE": "trade", "QUOTE": "quote"}


class MarketStoreSink:
    def __init__(self, writer: MarketStoreWriter, tail_rows: int = 2000,
                 repair_window_s: float = 420.0) -> None:
        self.writer = writer
        self.tail_rows = tail_rows
        self.repair_window_s = repair_window_s
        self._rows: dict[str, list[tuple]] = defaultdict(list)
        # fast path: per attribute group, chunks of (bucket ids, rows) in arrival order
        self._chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self.ids = BucketIds()
        self._owner: dict[str, TopicPartition] = {}
        self._tails: dict[str, Tail] = {}
        self._recent: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
        self.pending = 0
        self.repairs = 0

    # --- batch -----------------------------------------------------------------------------
    def add(self, kind: str, record: dict, tp: TopicPartition) -> str:
        """Buffer one record; RecordError when it cannot be stored. Returns its bucket."""
        tbk, row = buckets.to_row(kind, record)
        self._rows[tbk].append(row)
        self._owner[tbk] = tp
        self.pending += 1
        return tbk

    def add_rows(self, attr: str, bucket_ids: np.ndarray, rows: np.ndarray,
                 tp: TopicPartition) -> None:
        """Buffer many valid rows of one layout at once (``consumer.columns``), from one topic;
        ``tp`` gives the topic, each bucket's partition is its symbol's (see ``owners``)."""
        if not len(rows):
            return
        self._chunks[attr].append((bucket_ids, rows))
        self.pending += len(rows)

    def set_owner(self, tbk: str, tp: TopicPartition) -> None:
        self._owner[tbk] = tp

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {tbk: buckets.rows_to_array(attr_group(tbk), rows)
                  for tbk, rows in self._rows.items() if rows}
        for chunks in self._chunks.values():
            ids = np.concatenate([c[0] for c in chunks])
            rows = np.concatenate([c[1] for c in chunks])
            order = np.argsort(ids, kind="stable")
            ids, rows = ids[order], rows[order]
            cuts = np.flatnonzero(np.diff(ids)) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(ids)], strict=True):
                tbk = self.ids.names[int(ids[lo])]
                part = rows[lo:hi]
                arrays[tbk] = np.concatenate([arrays[tbk], part]) if tbk in arrays else part
        return arrays

    def clear(self) -> None:
        """Drop the unflushed batch (after an error the consumer rewinds and re-reads it)."""
        self._rows.clear()
        self._chunks.clear()
        self.pending = 0

    def reset(self) -> None:
        """Drop everything cached about MarketStore's content (after an error)."""
        self.clear()
        self._tails.clear()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Forget the tails of buckets fed by partitions this member no longer owns."""
        for tbk in [t for t, tp in self._owner.items() if tp in partitions]:
            self._tails.pop(tbk, None)
            self._recent.pop(tbk, None)
            del self._owner[tbk]

    def flush(self) -> FlushResult:
        """Write the batch (deduplicated) in one DataService.Write; MarketStoreError on failure.

        On failure the batch stays buffered; the caller decides (normally clear + rewind).
        """
        t0 = time.perf_counter()
        result = FlushResult()
        if not self.pending:
            return result
        arrays = self._arrays()
        variable = [tbk for tbk in arrays if VARIABLE[attr_group(tbk)]]
        self._load_tails([t for t in variable if t not in self._tails])
        reads: list[str] = []
        keep: dict[str, np.ndarray] = {}
        for tbk in variable:
            a = arrays[tbk]
            ts, seq = a["SipTimestamp"], a["SequenceNumber"]
            first = first_occurrences(ts, seq)
            new = self._tails[tbk].certainly_new(ts, seq)
            keep[tbk] = first & new
            if not np.all(new[first]):
                reads.append(tbk)
        for tbk in reads:
            a = arrays[tbk]
            ts, seq = a["SipTimestamp"], a["SequenceNumber"]
            first = first_occurrences(ts, seq)
            check = first & ~keep[tbk]
            lo, hi = int(ts[check].min()), int(ts[check].max())
            stored = self.writer.query([tbk], lo - WINDOW_NS, hi + WINDOW_NS).get(tbk)
            if stored is None or not len(stored):
                keep[tbk] = first
            else:
                keep[tbk] |= check & missing_mask(ts, seq, stored["SipTimestamp"],
                                                  stored["SequenceNumber"])
        out: dict[str, np.ndarray] = {}
        for tbk, a in arrays.items():
            attr = attr_group(tbk)
            if tbk in keep:
                result.duplicates_dropped += int(len(a) - keep[tbk].sum())
                a = a[keep[tbk]]
            if len(a):
                out[tbk] = buckets.sort_rows(attr, a)
        self.writer.write(out)
        now = time.monotonic()
        for tbk, a in out.items():
            attr = attr_group(tbk)
            kind = KIND_OF_ATTR[attr]
            result.rows_written[kind] = result.rows_written.get(kind, 0) + len(a)
            if VARIABLE[attr]:
                ts = a["SipTimestamp"]
                self._tails[tbk].update(ts, a["SequenceNumber"])
                self._recent[tbk].append((now, int(ts.min()), int(ts.max())))
        if out:
            tbk, a = next(reversed(out.items()))
            last = a[-1]
            if VARIABLE[attr_group(tbk)]:
                result.probe = Probe(tbk, int(last["Epoch"]), int(last["SipTimestamp"]),
                                     int(last["SequenceNumber"]))
            else:
                result.probe = Probe(tbk, int(last["Epoch"]), -1, -1)
        result.buckets = len(out)
        self.clear()
        result.seconds = time.perf_counter() - t0
        return result

    def verify(self, probe: Probe) -> bool:
        """True when the probe row reads back (its WAL transaction group was written)."""
        rows = self.writer.query([probe.tbk], probe.epoch_s * NS,
                                 probe.epoch_s * NS + NS - 1).get(probe.tbk)
        if rows is None or not len(rows):
            return False
        if probe.seq < 0:
            return bool(np.any(rows["Epoch"] == probe.epoch_s))
        return bool(np.any((rows["SipTimestamp"] == probe.sip_ns)
                           & (rows["SequenceNumber"] == probe.seq)))

    # --- tails and repair --------------------------------------------------------------------
    def _load_tails(self, tbks: list[str]) -> None:
        if not tbks:
            return
        found = self.writer.query(tbks, limit=self.tail_rows, from_start=False)
        for tbk in tbks:
            rows = found.get(tbk)
            if rows is None or not len(rows):
                self._tails[tbk] = Tail()
                continue
            ts, seq = rows["SipTimestamp"], rows["SequenceNumber"]
            if duplicate_count(ts, seq):
                self.repair(tbk)
                rows = self.writer.query([tbk], limit=self.tail_rows, from_start=False)[tbk]
                ts, seq = rows["SipTimestamp"], rows["SequenceNumber"]
            self._tails[tbk] = Tail.from_rows(ts, seq, complete=len(rows) < self.tail_rows)

    def repair_recent(self) -> int:
        """After a MarketStore error: rebuild recently written buckets that gained duplicates."""
        horizon = time.monotonic() - self.repair_window_s
        repaired = 0
        for tbk in list(self._recent):
            spans = [s for s in self._recent[tbk] if s[0] >= horizon]
            if not spans:
                del self._recent[tbk]
                continue
            self._recent[tbk] = spans
            lo = min(s[1] for s in spans) - WINDOW_NS
            hi = max(s[2] for s in spans) + WINDOW_NS
            rows = self.writer.query([tbk], lo, hi).get(tbk)
            if rows is not None and duplicate_count(rows["SipTimestamp"], rows["SequenceNumber"]):
                self.repair(tbk)
                repaired += 1
        return repaired

    def repair(self, tbk: str) -> None:
        """Rebuild a variable-length bucket without repeated rows (read all, destroy, write)."""
        rows = self.writer.query([tbk]).get(tbk)
        if rows is None:
            return
        dtype = DTYPES[attr_group(tbk)]
        rows = buckets.aligned(rows, dtype)
        keep = first_occurrences(rows["SipTimestamp"], rows["SequenceNumber"])
        dropped = int(len(rows) - keep.sum())
        if not dropped:
            return
        log.warning("repairing bucket with duplicated rows", extra={
            "bucket": tbk, "rows": len(rows), "duplicates": dropped})
        self.writer.destroy(tbk)
        self.writer.write({tbk: buckets.sort_rows(attr_group(tbk), rows[keep])})
        self._tails.pop(tbk, None)
        self.repairs += 1
