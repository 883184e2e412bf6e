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
  a read of the bucket's rows within a second of each of them (:func:`~consumer.dedupe.read_ranges`:
  the records' own ranges, not the span between them, so the rows read grow with the batch, not
  with the bucket; every bucket's ranges in one call) and only sequence numbers missing there
  are appended. Each bucket is written by one consumer at a time
  (Kafka key = symbol, so a bucket lives in one partition), which is what makes the cached tail
  the truth.
- MarketStore's own WAL replay after a kill -9 appends the variable-length rows of its last
  checkpoint interval a second time. The sink remembers the time ranges it wrote per bucket in
  the last ``repair_window_s`` and, after any MarketStore error, reads those ranges only
  (and, whenever a tail is loaded, the tail's rows) looking for rows that repeat an earlier
  (sequence number, time); it rebuilds such a bucket deduplicated (read all, destroy, write
  back; crash-safe through a shadow bucket and a marker that the bucket's next user
  completes): :meth:`MarketStoreSink.repair`. The rebuild is the one cost that stays
  proportional to the bucket: MarketStore deletes whole buckets only.

Isolated failures: an error that belongs to one bucket (its layout is another one, a
rebuild's shadow contradicts its marker, or its own read or write fails while the server
answers) is a :class:`BucketError`. The consumer counts it against the bucket and, when it can
never succeed or after ``consumer.bucket_max_attempts`` of them, quarantines the bucket
(:meth:`MarketStoreSink.note_failure`): its records then go to the dead-letter topic with the
reason while every other bucket is written. A failed write of many buckets is retried one
bucket per call once, so the failing one is known.

Durability: :meth:`flush` returns a probe (one row it wrote); the consumer commits offsets only
once the probe reads back (MarketStore makes rows visible only after their WAL group is
written) and the write is older than ``consumer.commit_delay_ms``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from consumer import buckets
from consumer.buckets import DTYPES, NS, VARIABLE, attr_group, column_names
from consumer.columns import BucketIds
from consumer.dedupe import (
    WINDOW_NS,
    Tail,
    TailTable,
    bucket_time_order,
    by_bucket,
    concat_rows,
    duplicate_count,
    first_occurrences,
    first_occurrences_grouped,
    merge_ranges,
    missing_mask,
    read_ranges,
    take_rows,
)
from consumer.recent import RecentWrites
from consumer.writer import MarketStoreError, MarketStoreWriter
from schemas.spec import Kind

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
# what a duplicate check needs of a stored trade or quote (the server adds the index columns)
KEY_COLUMNS = ("SipTimestamp", "SequenceNumber")


class BucketError(MarketStoreError):
    """A failure that belongs to one bucket; ``permanent`` when retrying cannot help."""

    def __init__(self, tbk: str, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.tbk = tbk
        self.reason = reason
        self.permanent = permanent


class QuarantinedError(Exception):
    """A record of a quarantined bucket: it goes to the dead-letter topic with the reason."""


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
    written_ns: int = 0  # wall clock when MarketStore acknowledged: queryable from then
    rows_read: int = 0  # stored rows read back to deduplicate




class MarketStoreSink:
    def __init__(self, writer: MarketStoreWriter, tail_rows: int = 2000,
                 repair_window_s: float = 420.0, bucket_max_attempts: int = 5) -> None:
        self.writer = writer
        self.tail_rows = tail_rows
        self.bucket_max_attempts = bucket_max_attempts
        self.ids = BucketIds()
        # per attribute group, chunks of (bucket ids, rows) in arrival (offset) order
        self._chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        self._owner: dict[int, TopicPartition] = {}
        self._tails = TailTable()
        self._recent = RecentWrites(repair_window_s)  # monotonic clock
        self.pending = 0
        self.repairs = 0
        self.dedupe_rows_read = 0  # stored rows read back by dedupe, since the start
        self._layout_ok: set[int] = set()  # fixed buckets whose columns were checked
        self.quarantined: dict[str, str] = {}  # bucket -> why its records are dead-lettered
        self._quarantined_ids = np.zeros(0, dtype=bool)
        self._failures: dict[str, int] = {}  # bucket -> failures in a row
        self._one_bucket_per_write = False  # after a failed write of many buckets

    # --- batch -----------------------------------------------------------------------------
    def add(self, kind: str, record: dict, tp: TopicPartition) -> str:
        """Buffer one record; RecordError when it cannot be stored, QuarantinedError when its
        bucket is quarantined. Returns its bucket."""
        tbk, row = buckets.to_row(kind, record)
        if tbk in self.quarantined:
            raise QuarantinedError(f"bucket {tbk} is quarantined: {self.quarantined[tbk]}")
        attr = attr_group(tbk)
        bid = self.ids.id_of(tbk)
        self._chunks[attr].append((np.array([bid], dtype=np.int64),
                                   buckets.rows_to_array(attr, [row])))
        self._owner[bid] = tp
        self.pending += 1
        return tbk

    def add_rows(self, attr: str, bucket_ids: np.ndarray, rows: np.ndarray) -> None:
        """Buffer many valid rows of one layout at once (``consumer.columns``)."""
        if not len(rows):
            return
        self._chunks[attr].append((bucket_ids, rows))
        self.pending += len(rows)

    def set_owner(self, bucket_id: int, tp: TopicPartition) -> None:
        self._owner[bucket_id] = tp

    # --- isolation -------------------------------------------------------------------------
    def quarantined_mask(self, ids: np.ndarray) -> np.ndarray | None:
        """Which of these bucket ids are quarantined; None when no bucket is."""
        if not self.quarantined:
            return None
        q = self._quarantined_ids
        return (ids < len(q)) & q[np.minimum(ids, len(q) - 1)]

    def note_failure(self, err: BucketError) -> bool:
        """Count a bucket's failure; True when that quarantines it (now permanent, or its
        ``bucket_max_attempts``-th failure in a row)."""
        if err.tbk in self.quarantined:
            return False
        n = self._failures.get(err.tbk, 0) + 1
        self._failures[err.tbk] = n
        if not err.permanent and n < self.bucket_max_attempts:
            return False
        del self._failures[err.tbk]
        self.quarantined[err.tbk] = err.reason if err.permanent else \
            f"{n} failures in a row, the last: {err.reason}"
        bid = self.ids.id_of(err.tbk)
        if bid >= len(self._quarantined_ids):
            grown = np.zeros(max(bid + 1, 2 * len(self._quarantined_ids)), dtype=bool)
            grown[:len(self._quarantined_ids)] = self._quarantined_ids
            self._quarantined_ids = grown
        self._quarantined_ids[bid] = True
        self._recent.drop(bid)
        return True

    def _blame(self, tbk: str, exc: MarketStoreError) -> BucketError:
        return exc if isinstance(exc, BucketError) else BucketError(tbk, str(exc))

    def _write(self, groups: list[tuple[str, np.ndarray, dict[str, tuple[int, int]]]]) -> None:
        """One write of every bucket; after a failed one, one write per bucket (once), so a
        bucket that cannot be written is known and the others are written."""
        if not self._one_bucket_per_write:
            try:
                self.writer.write_groups(groups)
            except MarketStoreError as exc:
                tbks = [tbk for g in groups for tbk in g[2]]
                if len(tbks) == 1:
                    raise self._blame(tbks[0], exc) from exc
                self._one_bucket_per_write = True
                raise
            return
        for attr, rows, slices in groups:
            for tbk, (start, n) in slices.items():
                try:
                    self.writer.write_groups([(attr, rows[start:start + n], {tbk: (0, n)})])
                except MarketStoreError as exc:
                    raise self._blame(tbk, exc) from exc
        self._one_bucket_per_write = False

    def clear(self) -> None:
        """Drop the unflushed batch (after an error the consumer rewinds and re-reads it)."""
        self._chunks.clear()
        self.pending = 0

    def reset(self) -> None:
        """Drop everything cached about MarketStore's content (after an error)."""
        self.clear()
        self._tails.clear()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Forget the tails of buckets fed by partitions this member no longer owns."""
        gone = [b for b, tp in self._owner.items() if tp in partitions]
        self._tails.drop(gone)
        for b in gone:
            self._recent.drop(b)
            del self._owner[b]

    def take(self) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """Hand over the buffered batch (to flush on another thread) and start a new one."""
        chunks = dict(self._chunks)
        self.clear()
        return chunks

    def flush(self) -> FlushResult:
        """Write the buffered batch; see :meth:`flush_taken`."""
        return self.flush_taken(self.take())

    def flush_taken(self, taken: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> FlushResult:
        """Write a batch (deduplicated) in one DataService.Write; MarketStoreError on failure.

        Everything is vectorised over all buckets of a layout: one concatenated array per
        layout, sorted by (bucket, time), sliced into buckets by the request's startindex map.
        On failure nothing is kept that could be wrong: the caller clears and rewinds.
        """
        t0 = time.perf_counter()
        result = FlushResult()
        if not taken:
            return result
        rows_read_before = self.writer.rows_read
        groups: list[tuple[str, np.ndarray, dict[str, tuple[int, int]]]] = []
        written: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        for attr, chunks in taken.items():
            ids = np.concatenate([c[0] for c in chunks])
            rows = concat_rows([c[1] for c in chunks])
            if VARIABLE[attr]:
                grouped = by_bucket(ids)
                keep = self._dedupe(ids, rows, grouped)
                kept = int(keep.sum())
                result.duplicates_dropped += len(rows) - kept
                if kept != len(rows):
                    ids, rows = ids[keep], take_rows(rows, np.flatnonzero(keep))
                    grouped = by_bucket(ids)
                # one gather of the wide rows, straight into (bucket, time) order
                order = bucket_time_order(ids, rows["SipTimestamp"], grouped)
            else:
                self._check_fixed_layouts(ids)
                # the same bar twice in a batch: the later one wins, as a later write would
                order = np.lexsort((rows["Epoch"], ids))
                i, e = ids[order], rows["Epoch"][order]
                last = np.ones(len(order), dtype=bool)
                last[:-1] = (i[1:] != i[:-1]) | (e[1:] != e[:-1])
                order = order[last]
            ids, rows = ids[order], take_rows(rows, order)
            if not len(rows):
                continue
            uniq, starts, counts = np.unique(ids, return_index=True, return_counts=True)
            slices = {self.ids.names[b]: (st, n) for b, st, n in
                      zip(uniq.tolist(), starts.tolist(), counts.tolist(), strict=True)}
            groups.append((attr, rows, slices))
            written.append((attr, rows, uniq, starts))
            kind = Kind.of_attr_group(attr)
            result.rows_written[kind] = result.rows_written.get(kind, 0) + len(rows)
            result.buckets += len(uniq)
        self._write(groups)
        result.written_ns = time.time_ns()
        result.rows_read = self.writer.rows_read - rows_read_before
        self.dedupe_rows_read += result.rows_read
        if self._failures:
            for _attr, _rows, slices in groups:
                for tbk in slices:
                    self._failures.pop(tbk, None)
        now = time.monotonic()
        for attr, rows, uniq, starts in written:
            if VARIABLE[attr]:
                ts, seq = rows["SipTimestamp"], rows["SequenceNumber"]
                lo, hi = np.minimum.reduceat(ts, starts), np.maximum.reduceat(ts, starts)
                self._tails.update(uniq, lo, hi, np.minimum.reduceat(seq, starts),
                                   np.maximum.reduceat(seq, starts))
                self._remember_written(now, uniq, starts, ts)
        if written:
            attr, rows, uniq, _ = written[-1]
            last = rows[-1]
            tbk = self.ids.names[int(uniq[-1])]
            if VARIABLE[attr]:
                result.probe = Probe(tbk, int(last["Epoch"]), int(last["SipTimestamp"]),
                                     int(last["SequenceNumber"]))
            else:
                result.probe = Probe(tbk, int(last["Epoch"]), -1, -1)
        result.seconds = time.perf_counter() - t0
        return result

    def _dedupe(self, ids: np.ndarray, rows: np.ndarray,
                grouped: np.ndarray | None = None) -> np.ndarray:
        """Keep-mask of rows neither repeated in the batch nor already in MarketStore
        (``grouped``: :func:`by_bucket` of ``ids``, when the caller has it)."""
        ts, seq = rows["SipTimestamp"], rows["SequenceNumber"]
        self._load_tails(self._tails.missing(ids))
        first = first_occurrences_grouped(ids, ts, seq, grouped)
        new = self._tails.certainly_new(ids, ts, seq)
        keep = first & new
        check = first & ~new
        todo = np.flatnonzero(check)
        if len(todo):
            # grouped by bucket, each compared with its own stored rows only
            todo = todo[np.argsort(ids[todo], kind="stable")]
            _, starts = np.unique(ids[todo], return_index=True)
            mine_of = {self.ids.names[int(ids[m[0]])]: m for m in np.split(todo, starts[1:])}
            ranges = []
            for tbk, mine in mine_of.items():
                lo, hi = read_ranges(ts[mine])
                ranges += [(tbk, a, z) for a, z in zip(lo.tolist(), hi.tolist(), strict=True)]
            found = self._read_ranges(ranges)
            for tbk, mine in mine_of.items():
                stored = found.get(tbk)
                if stored is None or not len(stored):
                    keep[mine] = True
                else:
                    keep[mine] = missing_mask(ts[mine], seq[mine], stored["SipTimestamp"],
                                              stored["SequenceNumber"])
        return keep

    def _read_ranges(self, ranges: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
        """The key columns of stored rows in many buckets' ranges, in as few calls as fit
        (bucket by bucket after a failure: :meth:`_read_blaming`)."""
        return self._read_blaming(
            list(dict.fromkeys(r[0] for r in ranges)),
            lambda tbks: self.writer.query_ranges(
                ranges if len(tbks) > 1 else [r for r in ranges if r[0] == tbks[0]],
                KEY_COLUMNS))

    def _remember_written(self, now: float, uniq: np.ndarray, starts: np.ndarray,
                          ts: np.ndarray) -> None:
        """Add the time ranges just written (rows in (bucket, time) order, bucket ``uniq[i]``
        from ``starts[i]``) to the ranges a WAL replay can have doubled."""
        gap = np.flatnonzero(ts[1:] - ts[:-1] > 2 * WINDOW_NS) + 1
        if len(gap):
            cuts = np.union1d(starts, gap)
            owner = uniq[np.searchsorted(starts, cuts, side="right") - 1]
        else:
            cuts, owner = starts, uniq
        ends = np.append(cuts[1:], len(ts)) - 1
        for b, a, z in zip(owner.tolist(), ts[cuts].tolist(), ts[ends].tolist(), strict=True):
            self._recent.add(now, b, a, z)

    def verify(self, probe: Probe, writer: MarketStoreWriter | None = None) -> bool:
        """True when the probe row reads back (its WAL transaction group was written)."""
        rows = (writer or self.writer).query([probe.tbk], probe.epoch_s * NS,
                                 probe.epoch_s * NS + NS - 1).get(probe.tbk)
        if rows is None or not len(rows):
            return False
        if probe.seq < 0:
            return bool(np.any(rows["Epoch"] == probe.epoch_s))
        return bool(np.any((rows["SipTimestamp"] == probe.sip_ns)
                           & (rows["SequenceNumber"] == probe.seq)))

    # --- tails and repair --------------------------------------------------------------------
    def _load_tails(self, bucket_ids: np.ndarray) -> None:
        if not len(bucket_ids):
            return
        tbks = [self.ids.names[b] for b in bucket_ids.tolist()]
        self._finish_repairs(tbks)
        found = self._query_each(tbks, limit=self.tail_rows, from_start=False)
        for b, tbk in zip(bucket_ids.tolist(), tbks, strict=True):
            rows = found.get(tbk)
            if rows is None or not len(rows):
                self._tails.set(b, Tail())
                continue
            _check_layout(tbk, rows)
            ts, seq = rows["SipTimestamp"], rows["SequenceNumber"]
            if duplicate_count(ts, seq):
                try:
                    self.repair(tbk)
                    rows = self.writer.query([tbk], limit=self.tail_rows,
                                             from_start=False)[tbk]
                except MarketStoreError as exc:
                    raise self._blame(tbk, exc) from exc
                ts, seq = rows["SipTimestamp"], rows["SequenceNumber"]
            self._tails.set(b, Tail.from_rows(ts, seq, complete=len(rows) < self.tail_rows))

    def _query_each(self, tbks: list[str], **query: object) -> dict[str, np.ndarray]:
        """``writer.query`` of many buckets in one call (bucket by bucket after a failure:
        :meth:`_read_blaming`)."""
        return self._read_blaming(
            tbks, lambda some: self.writer.query(some, **query))  # type: ignore[arg-type]

    def _read_blaming(self, tbks: list[str],
                      read: Callable[[list[str]], dict[str, np.ndarray]],
                      ) -> dict[str, np.ndarray]:
        """``read(tbks)`` in one call; when that fails, ``read([tbk])`` bucket by bucket,
        so the bucket whose reads fail is known (its :class:`BucketError` is raised)."""
        try:
            return read(tbks)
        except MarketStoreError as exc:
            if len(tbks) == 1:
                raise self._blame(tbks[0], exc) from exc
        out: dict[str, np.ndarray] = {}
        for tbk in tbks:
            try:
                out.update(read([tbk]))
            except MarketStoreError as exc:
                raise self._blame(tbk, exc) from exc
        return out

    def _check_fixed_layouts(self, ids: np.ndarray) -> None:
        todo = [b for b in np.unique(ids).tolist() if b not in self._layout_ok]
        if not todo:
            return
        tbks = [self.ids.names[b] for b in todo]
        for tbk, rows in self._query_each(tbks, limit=1, from_start=False).items():
            _check_layout(tbk, rows)
        self._layout_ok.update(todo)

    def repair_recent(self) -> int:
        """After a MarketStore error: rebuild recently written buckets that gained duplicates.

        Only the ranges written within ``repair_window_s`` are read (what a WAL replay can
        have doubled), every bucket's in one call; a bucket that fails raises
        :class:`BucketError`."""
        ranges = []
        for b, first, last in self._recent.ranges(time.monotonic()):
            tbk = self.ids.names[b]
            # Whole intervals, merged: the server trims a range inside an interval only by
            # the rows' order there, so two ranges in one interval could both return a row,
            # which would look duplicated.
            iv = INTERVAL_NS[tbk.split("/")[1]]
            lo, hi = merge_ranges((first - WINDOW_NS) // iv * iv,
                                  (last + WINDOW_NS) // iv * iv + iv - 1)
            ranges += [(tbk, a, z) for a, z in zip(lo.tolist(), hi.tolist(), strict=True)]
        if not ranges:
            return 0
        repaired = 0
        for tbk, rows in self._read_ranges(ranges).items():
            if duplicate_count(rows["SipTimestamp"], rows["SequenceNumber"]):
                try:
                    self.repair(tbk)
                except MarketStoreError as exc:
                    raise self._blame(tbk, exc) from exc
                repaired += 1
        return repaired

    def repair(self, tbk: str) -> None:
        """Rebuild a variable-length bucket without repeated rows, crash-safely.

        MarketStore cannot delete rows, only whole buckets, so: (1) write the deduplicated rows
        to a shadow bucket ``SYMBOL/TF/<ATTR>REPAIR`` and check its row count, (2) write a
        marker ``SYMBOL/TF/<ATTR>REPAIRED`` (fixed length: the row count) saying the shadow is
        complete, (3) destroy the bucket, copy the shadow back and check its count, (4) destroy
        the marker, then the shadow. A member that finds a marker when it first uses a bucket
        (this one after a crash, or the partition's next owner) finishes step 3 from the shadow
        (:meth:`_finish_repairs`); a shadow without a marker is an unfinished step 1 (the
        bucket is intact) and is simply replaced by the next repair.

        Every step goes :data:`REPAIR_PAGE_ROWS` rows at a time (:meth:`_pages`), so memory
        stays bounded; the bucket is read once, the shadow once, and each is counted once
        (the count reads one column).
        """
        shadow, marker = _shadow_keys(tbk)
        attr = attr_group(tbk)
        self._destroy_if_present(shadow)
        total = dropped = 0
        for page in self._pages(tbk):
            keep = first_occurrences(page["SipTimestamp"], page["SequenceNumber"])
            dropped += int(len(page) - keep.sum())
            clean = buckets.sort_rows(attr, buckets.aligned(page[keep], DTYPES[attr]))
            self.writer.write({shadow: clean})
            total += len(clean)
        if not dropped:
            self._destroy_if_present(shadow)
            return
        log.warning("repairing bucket with duplicated rows", extra={
            "bucket": tbk, "rows": total + dropped, "duplicates": dropped})
        self._expect_rows(shadow, total)
        mark = np.zeros(1, dtype=MARKER_DTYPE)
        mark["Epoch"], mark["Rows"] = 1_000_000_000, total  # any fixed time; 0 = hole
        self.writer.write({marker: mark})
        self._restore(tbk, total)
        self._tails.drop([self.ids.id_of(tbk)])
        self.repairs += 1

    def _pages(self, tbk: str, columns: tuple[str, ...] | None = None
               ) -> Iterator[np.ndarray]:
        """A bucket's rows, in time order, :data:`REPAIR_PAGE_ROWS` at a time (more when one
        interval holds more). A page ends at an interval boundary, so the copies a WAL replay
        appended (same time, same interval) are always in one page."""
        interval_s = INTERVAL_NS[tbk.split("/")[1]] // NS
        start = 0
        while True:
            rows = self.writer.query([tbk], start * NS, limit=REPAIR_PAGE_ROWS,
                                     columns=columns).get(tbk)
            if rows is None or not len(rows):
                return
            if len(rows) < REPAIR_PAGE_ROWS:
                yield rows
                return
            # the server returns intervals in order (rows within one in writing order) and
            # may end a page inside one: that interval starts the next page
            interval = rows["Epoch"] // interval_s
            cut = int(np.searchsorted(interval, interval[-1], side="left"))
            start = int(interval[-1]) * interval_s
            if cut == 0:  # one interval holds a page or more: all of it at once
                rows = self.writer.query([tbk], start * NS, (start + interval_s) * NS - 1,
                                         columns=columns)[tbk]
                cut, start = len(rows), start + interval_s
            yield rows[:cut]

    def _restore(self, tbk: str, total: int) -> None:
        """Step 3 and 4 of :meth:`repair`: the bucket again, from its shadow of ``total`` rows
        (deduplicated again: a WAL replay may have doubled the shadow's last writes)."""
        shadow, marker = _shadow_keys(tbk)
        attr = attr_group(tbk)
        self._destroy_if_present(tbk)
        for page in self._pages(shadow):
            keep = first_occurrences(page["SipTimestamp"], page["SequenceNumber"])
            self.writer.write({tbk: buckets.sort_rows(attr, buckets.aligned(page[keep],
                                                                           DTYPES[attr]))})
        self._expect_rows(tbk, total)
        self.writer.destroy(marker)
        self._destroy_if_present(shadow)

    def _finish_repairs(self, tbks: list[str]) -> None:
        """Complete repairs a crash interrupted after their shadow was complete."""
        markers = {_shadow_keys(t)[1]: t for t in tbks}
        found = self._query_each(list(markers), limit=1)
        for marker, mark in found.items():
            tbk = markers[marker]
            shadow = _shadow_keys(tbk)[0]
            want = int(mark["Rows"][0])
            try:
                have = sum(int(first_occurrences(p["SipTimestamp"], p["SequenceNumber"]).sum())
                           for p in self._pages(shadow, KEY_COLUMNS))
                if have != want:
                    raise BucketError(tbk, f"the repair shadow of {tbk} holds {have} rows, "
                                      f"its marker says {want}", permanent=True)
                log.warning("finishing an interrupted bucket repair", extra={"bucket": tbk})
                self._restore(tbk, want)
            except MarketStoreError as exc:
                raise self._blame(tbk, exc) from exc

    def _destroy_if_present(self, tbk: str) -> None:
        if self.writer.query([tbk], limit=1).get(tbk) is not None:
            self.writer.destroy(tbk)

    def _expect_rows(self, tbk: str, n: int) -> None:
        got = sum(len(p) for p in self._pages(tbk, KEY_COLUMNS[1:]))
        if got != n:
            raise MarketStoreError(f"{tbk}: {got} rows after a rewrite of {n}")


def _check_layout(tbk: str, rows: np.ndarray) -> None:
    """A bucket of another layout (the legacy plugin's, say) cannot take our rows; say so
    instead of failing on a missing column or letting the server reject every batch."""
    want = set(column_names(DTYPES[attr_group(tbk)]))
    got = set(rows.dtype.names or ())
    if got != want:
        raise BucketError(
            tbk, f"bucket {tbk} has the columns {sorted(got)}, the consumer writes "
            f"{sorted(want)}: a bucket of another layout (e.g. the legacy plugin's); migrate "
            "or destroy it", permanent=True)


MARKER_DTYPE = np.dtype([("Epoch", "<i8"), ("Rows", "<i8")])
REPAIR_PAGE_ROWS = 500_000  # rows a rebuild holds at once
INTERVAL_NS = {"1Sec": NS, "1Min": 60 * NS}  # of the variable-length buckets' timeframes


def _shadow_keys(tbk: str) -> tuple[str, str]:
    symbol, tf, attr = tbk.split("/")
    return f"{symbol}/{tf}/{attr}REPAIR", f"{symbol}/{tf}/{attr}REPAIRED"
