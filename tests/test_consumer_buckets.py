"""Pure tests of the bucket layout, condition packing and deduplication rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from consumer import buckets
from consumer.buckets import RecordError, bucket_key, bucket_symbol, pack_codes, unpack_codes
from consumer.columns import BucketIds
from consumer.dedupe import (
    WINDOW_NS,
    Tail,
    TailTable,
    bucket_time_order,
    by_bucket,
    first_occurrences,
    first_occurrences_grouped,
    merge_ranges,
    missing_mask,
    read_ranges,
)
from consumer.writer import build_write_requests, group_buckets
from tests.support.testkit import BASE_NS, bar, quote, trade


def test_symbols_map_slash_and_reject_unkeyable() -> None:
    assert bucket_symbol("BRK/A") == "BRK.A"
    assert bucket_symbol("BRK.B") == "BRK.B"
    for bad in ["", "A:B", "A,B", "*", "..", "A B", "ÄPPL", "A..B", "X" * 41, ".A"]:
        with pytest.raises(RecordError):
            bucket_symbol(bad)


def test_bucket_keys() -> None:
    assert bucket_key("trade", trade("AAPL", 1, BASE_NS)) == "AAPL/1Sec/TRADE"
    assert bucket_key("quote", quote("BRK/A", 1, BASE_NS)) == "BRK.A/1Min/QUOTE"
    assert bucket_key("bar", bar("AAPL", BASE_NS)) == "AAPL/1Min/OHLCV"
    assert bucket_key("bar", bar("AAPL", BASE_NS, "1D", source="backfill")) == "AAPL/1D/OHLCV"
    # a live bar always goes to 1Min
    assert bucket_key("bar", bar("AAPL", BASE_NS, "5Min")) == "AAPL/1Min/OHLCV"
    with pytest.raises(RecordError):
        bucket_key("bar", {**bar("AAPL", BASE_NS, source="backfill"), "timeframe": "7Min"})


@pytest.mark.parametrize("codes", [[], [0], [14, 41], [1, 2, 3, 4], [65534, 0, 65534, 65534],
                                   [7, 7]])
def test_condition_codes_round_trip(codes: list[int]) -> None:
    packed = pack_codes(codes)
    assert -(1 << 63) <= packed < (1 << 63)
    assert unpack_codes(packed) == codes


def test_condition_codes_not_representable_are_rejected() -> None:
    with pytest.raises(RecordError):
        pack_codes([1, 2, 3, 4, 5])
    with pytest.raises(RecordError):
        pack_codes([65535])
    with pytest.raises(RecordError):
        pack_codes([-1])


def test_rows_keep_every_value() -> None:
    t = trade("A", 7, BASE_NS + 123_456_789, size=0.5, participant_timestamp_ns=BASE_NS + 5,
              trf_id=3, trf_timestamp_ns=BASE_NS - 9, correction=1, conditions=[12, 37])
    _, row = buckets.to_row("trade", t)
    a = buckets.rows_to_array("TRADE", [row])[0]
    assert a["Epoch"] == BASE_NS // 10**9 + 0 and a["Nanoseconds"] == 123_456_789
    assert a["SipTimestamp"] == BASE_NS + 123_456_789 and a["Size"] == 0.5
    assert a["ParticipantTimestamp"] == BASE_NS + 5 and a["TrfTimestamp"] == BASE_NS - 9
    assert (a["TrfId"], a["Correction"], a["SequenceNumber"]) == (3, 1, 7)
    assert unpack_codes(a["Conditions"]) == [12, 37]
    _, row = buckets.to_row("bar", bar("A", BASE_NS, vwap=None, trades=None))
    b = buckets.rows_to_array("OHLCV", [row])[0]
    assert math.isnan(b["VWAP"]) and b["Trades"] == -1 and b["StartNs"] == BASE_NS


@pytest.mark.parametrize("field,value", [("price", float("nan")), ("size", -1.0),
                                         ("sip_timestamp_ns", 0), ("sequence_number", None),
                                         ("exchange", "x"), ("price", None)])
def test_invalid_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(RecordError):
        buckets.to_row("trade", trade("A", 1, BASE_NS, **{field: value}))


def test_first_occurrences_keeps_arrival_order_and_same_timestamp_events() -> None:
    ts = np.array([BASE_NS + 5_000_000, BASE_NS + 5_123_456, BASE_NS + 5_000_000, BASE_NS])
    seq = np.array([10, 10, 11, 9])  # 10 twice: live ms then REST ns; 11 same ts as first
    assert first_occurrences(ts, seq).tolist() == [True, False, True, True]
    # the same sequence number on another day is another event
    ts2 = np.array([BASE_NS, BASE_NS + 86_400 * 10**9])
    assert first_occurrences(ts2, np.array([5, 5])).tolist() == [True, True]


def test_first_occurrences_finds_copies_with_another_days_event_between() -> None:
    # a replay batch: today's live print seq 5, then a two-day backfill's seq 5 of yesterday
    # and of today (the REST shape of the same print)
    day = 86_400 * 10**9
    ts = np.array([BASE_NS + day + 5_000_000, BASE_NS, BASE_NS + day + 5_123_456])
    seq = np.array([5, 5, 5])
    assert first_occurrences(ts, seq).tolist() == [True, True, False]
    ids = np.array([0, 1, 0, 1, 0])
    ts5 = np.array([ts[0], ts[0], ts[1], ts[2], ts[2]])
    assert first_occurrences_grouped(ids, ts5, np.full(5, 5)).tolist() == \
        [True, True, True, False, False]


def test_missing_mask() -> None:
    stored_ts = np.array([BASE_NS, BASE_NS + 1000])
    stored_seq = np.array([1, 2])
    ts = np.array([BASE_NS + 400_000, BASE_NS + 1000, BASE_NS + 2 * WINDOW_NS])
    seq = np.array([1, 3, 2])
    assert missing_mask(ts, seq, stored_ts, stored_seq).tolist() == [False, True, True]


def test_tail_fast_path() -> None:
    table = TailTable()  # the sink's per-bucket tails, bucket 0 here

    def new(ts: np.ndarray, seq: np.ndarray, bucket: int = 0) -> list[bool]:
        return table.certainly_new(np.full(len(ts), bucket), ts, seq).tolist()

    def update(ts: np.ndarray, seq: np.ndarray) -> None:
        table.update(np.array([0]), ts.min(keepdims=True), ts.max(keepdims=True),
                     seq.min(keepdims=True), seq.max(keepdims=True))

    table.set(0, Tail.from_rows(np.array([BASE_NS, BASE_NS + 10]), np.array([5, 6]),
                                complete=True))
    ts = np.array([BASE_NS + 20, BASE_NS + 5, BASE_NS + 2 * WINDOW_NS, BASE_NS + 30])
    seq = np.array([7, 3, 1, 6])
    assert new(ts, seq) == [True, False, True, False]
    update(np.array([BASE_NS + 20]), np.array([7]))
    assert (table.get(0).max_ts, table.get(0).max_seq) == (BASE_NS + 20, 7)
    # a new day after a gap restarts the sequence range
    day2 = BASE_NS + 86_400 * 10**9
    update(np.array([day2]), np.array([1]))
    assert new(np.array([day2 + 5]), np.array([2])) == [True]
    # a partial tail only vouches for rows after its oldest timestamp
    table.set(1, Tail.from_rows(np.array([BASE_NS + 5 * WINDOW_NS]), np.array([50]),
                                complete=False))
    assert new(np.array([BASE_NS]), np.array([60]), bucket=1) == [False]


def test_one_request_per_layout_many_buckets() -> None:
    arrays = {}
    for sym in ("A", "B"):
        for kind, rec in (("trade", trade(sym, 1, BASE_NS)), ("quote", quote(sym, 1, BASE_NS)),
                          ("bar", bar(sym, BASE_NS))):
            tbk, row = buckets.to_row(kind, rec)
            arrays[tbk] = buckets.rows_to_array(buckets.attr_group(tbk), [row, row])
    reqs = build_write_requests(group_buckets(arrays))
    assert len(reqs) == 3
    for req in reqs:
        ds = req["dataset"]
        assert ds["length"] == 4 and len(ds["startindex"]) == 2
        assert sorted(ds["startindex"].values()) == [0, 2]
        assert all(len(col) == 4 * np.dtype("<" + t if t[0] in "iuf" else t).itemsize
                   for col, t in zip(ds["data"], ds["types"], strict=True))
    assert {r["is_variable_length"] for r in reqs} == {True, False}


def _variants() -> list[tuple[str, dict]]:
    # one-sided quotes: the empty side's price is NaN (stored as NaN)
    recs: list[tuple[str, dict]] = [
        ("quote", quote("Q", 1001, BASE_NS + 1001, bid_price=float("nan"), bid_size=0.0)),
        ("quote", quote("Q", 1002, BASE_NS + 1002, ask_price=float("nan"), ask_size=0.0))]
    for i in range(60):
        t = trade("A" if i % 2 else "BRK/B", i, BASE_NS + i * 997, size=i / 3,
                  tape=None if i % 4 == 0 else 1 + i % 3,
                  trf_id=None if i % 5 else i, correction=None if i % 7 else 1,
                  participant_timestamp_ns=None if i % 3 else BASE_NS - i,
                  trf_timestamp_ns=None if i % 2 else BASE_NS + i,
                  conditions=[i % 60, 65534, 0, i][: i % 5])
        recs.append(("trade", t))
        recs.append(("quote", quote("Q", i, BASE_NS + i, bid_exchange=None if i % 3 else 2,
                                    indicators=list(range(i % 5)), tape=None)))
        recs.append(("bar", bar("B", BASE_NS + i * 60 * 10**9, ("1Min", "5Min", "1H", "1D")[i % 4],
                                source="live" if i % 2 else "backfill",
                                vwap=None if i % 3 else 1.5, trades=None if i % 2 else i,
                                otc=bool(i % 5 == 0))))
    bad = [
        ("trade", trade("A", 1, BASE_NS, price=float("nan"))),
        ("trade", trade("A", 1, BASE_NS, conditions=[1, 2, 3, 4, 5])),
        ("trade", trade("A", 1, BASE_NS, conditions=[70000])),
        ("trade", trade("A:B", 1, BASE_NS)),
        ("trade", trade("A", 1, BASE_NS, tape=-3)),
        ("trade", trade("A", 1, BASE_NS, size=-1.0)),
        ("quote", quote("Q", 1, 0)),
        ("quote", quote("Q", 1, BASE_NS, ask_size=float("inf"))),
        ("quote", quote("Q", 1, BASE_NS, bid_price=float("inf"))),
        ("quote", quote("Q", 1, BASE_NS, ask_price=float("-inf"))),
        ("bar", bar("B", BASE_NS, source="backfill", timeframe="1Min", volume=-5.0)),
        ("bar", {**bar("B", BASE_NS, source="backfill"), "timeframe": "7Min"}),
    ]
    return recs + bad


def test_columnar_fast_path_equals_the_per_record_reference() -> None:
    from common.config import Config
    from consumer import columns
    from schemas.codec import make_codec

    codec = make_codec(Config())
    recs = _variants()
    decoded = codec.decode_batch([codec.encode(k, r) for k, r in recs])
    assert not decoded.errors and not decoded.records
    ids = columns.BucketIds()
    checked = 0
    for kind, cols in decoded.columns.items():
        rows, bucket, ok = columns.build(kind, cols, ids)
        for j, i in enumerate(decoded.rows[kind].tolist()):
            k, rec = recs[i]
            assert k == kind
            try:
                tbk, row = buckets.to_row(kind, rec)
            except RecordError:
                assert not ok[j], rec
                continue
            assert ok[j], rec
            assert ids.names[bucket[j]] == tbk
            want = buckets.rows_to_array(buckets.attr_group(tbk), [row])
            assert rows[j:j + 1].tobytes() == want.tobytes(), (rec, rows[j], want)
            checked += 1
    assert checked == 182


def test_bucket_ids_of_bars_agree_with_bucket_key() -> None:
    cols = {"symbol": np.array(["A", "A", "B/C", "bad sym", "A", "A"], dtype=object),
            "timeframe": np.array(["1Min", "5Min", "1D", "1Min", "7Min", "7Min"], dtype=object),
            "source": np.array(["backfill", "backfill", "backfill", "live", "live", "backfill"],
                               dtype=object)}
    ids = BucketIds()
    for _ in range(2):  # the second call is served from the cache
        got = ids.for_bars(cols)
        assert [ids.names[i] if i >= 0 else None for i in got.tolist()] == \
            ["A/1Min/OHLCV", "A/5Min/OHLCV", "B.C/1D/OHLCV", None, "A/1Min/OHLCV", None]


def test_sink_dedupe_compares_each_bucket_with_its_own_stored_rows() -> None:
    from consumer.sink import MarketStoreSink

    stored = np.zeros(2, dtype=buckets.DTYPES["TRADE"])
    stored["SipTimestamp"], stored["SequenceNumber"] = [BASE_NS, BASE_NS + 10], [1, 2]

    class StoredA:  # a fake of the writer's queries: bucket A holds seq 1 and 2, B nothing
        rows_read = 0

        def query(self, tbks: list[str], *_: object, **__: object) -> dict[str, np.ndarray]:
            return {t: stored for t in tbks if t == "A/1Sec/TRADE"}

        def query_ranges(self, ranges: list[tuple[str, int, int]], columns: object
                         ) -> dict[str, np.ndarray]:
            assert sorted(r[0] for r in ranges) == ["A/1Sec/TRADE", "B/1Sec/TRADE"]
            return {t: stored for t, lo, hi in ranges if t == "A/1Sec/TRADE"}

    sink = MarketStoreSink(StoredA())  # type: ignore[arg-type]
    a, b = sink.ids.id_of("A/1Sec/TRADE"), sink.ids.id_of("B/1Sec/TRADE")
    for bid in (a, b):  # tails above the rows: every row needs the stored-rows check
        sink._tails.set(bid, Tail(BASE_NS + 10, 2, 0))
    rows = np.zeros(5, dtype=buckets.DTYPES["TRADE"])
    rows["SipTimestamp"] = [BASE_NS, BASE_NS + 10, BASE_NS, BASE_NS + 5, BASE_NS + 10]
    rows["SequenceNumber"] = [1, 2, 1, 0, 2]
    ids = np.array([a, a, b, a, b])
    assert sink._dedupe(ids, rows).tolist() == [False, False, True, True, True]


def test_grouped_shortcuts_equal_the_full_sorts() -> None:
    """by_bucket + bucket_time_order == lexsort((ts, ids)), and first_occurrences_grouped
    gives the same mask with or without the grouped shortcut, on ordered and shuffled
    batches with and without copies."""
    rng = np.random.default_rng(4)
    for trial in range(200):
        n = int(rng.integers(1, 400))
        ids = rng.integers(0, 8, n)
        ts = np.sort(rng.integers(0, 5 * WINDOW_NS, n))
        seq = np.arange(n) * 3
        if trial % 2:  # copies of events, late arrivals, equal times
            pick = rng.integers(0, n, n // 4)
            ids[-len(pick):], ts[-len(pick):], seq[-len(pick):] = ids[pick], ts[pick], seq[pick]
        if trial % 3 == 0:
            perm = rng.permutation(n)
            ids, ts, seq = ids[perm], ts[perm], seq[perm]
        grouped = by_bucket(ids)
        assert bucket_time_order(ids, ts, grouped).tolist() == np.lexsort((ts, ids)).tolist()
        assert first_occurrences_grouped(ids, ts, seq, grouped).tolist() == \
            first_occurrences_grouped(ids, ts, seq).tolist()


def test_a_flush_records_when_marketstore_acknowledged_the_write() -> None:
    """End-to-end latency ends there (queryable), not when the poll loop next looks."""
    import time

    from consumer.sink import MarketStoreSink
    from tests.support.testkit import trade

    class SlowWriter:  # a fake: nothing stored yet, and a write that takes 50 ms
        acked_ns = 0
        rows_read = 0

        def query(self, *_: object, **__: object) -> dict[str, np.ndarray]:
            return {}

        def write_groups(self, groups: list) -> int:
            time.sleep(0.05)
            self.acked_ns = time.time_ns()
            return len(groups)

    writer = SlowWriter()
    sink = MarketStoreSink(writer)  # type: ignore[arg-type]
    sink.add("trade", trade("LAT", 1, BASE_NS), ("trades", 0))
    before = time.time_ns()
    result = sink.flush()
    assert result.rows_written == {"trade": 1}
    assert writer.acked_ns <= result.written_ns <= time.time_ns()
    assert result.written_ns - before >= 50_000_000


def test_a_one_sided_quote_is_stored_with_a_nan_price() -> None:
    _, row = buckets.to_row("quote", quote("Q", 5, BASE_NS, bid_price=float("nan"),
                                           bid_size=0.0, ask_price=10.5))
    q = buckets.rows_to_array("QUOTE", [row])[0]
    assert math.isnan(q["BidPrice"]) and q["BidSize"] == 0.0 and q["AskPrice"] == 10.5
    for price in (float("inf"), float("-inf"), None, "1.0"):
        with pytest.raises(RecordError):
            buckets.to_row("quote", quote("Q", 5, BASE_NS, bid_price=price))


def test_read_ranges_cover_each_records_window_not_the_span_between() -> None:
    day = 86_400 * 10**9
    # a backfill batch interleaving two days around a stored one: two ranges, not three days
    ts = np.concatenate([BASE_NS + np.arange(0, 60 * WINDOW_NS, WINDOW_NS // 2),
                         BASE_NS + 2 * day + np.arange(0, 10 * WINDOW_NS, WINDOW_NS)])
    lo, hi = read_ranges(np.random.default_rng(1).permutation(ts))
    assert lo.tolist() == [BASE_NS - WINDOW_NS, BASE_NS + 2 * day - WINDOW_NS]
    assert hi.tolist() == [BASE_NS + 60 * WINDOW_NS - WINDOW_NS // 2 + WINDOW_NS,
                           BASE_NS + 2 * day + 10 * WINDOW_NS]
    # exactly 2 windows apart still touch; a nanosecond more splits
    assert len(read_ranges(np.array([BASE_NS, BASE_NS + 2 * WINDOW_NS]))[0]) == 1
    assert len(read_ranges(np.array([BASE_NS, BASE_NS + 2 * WINDOW_NS + 1]))[0]) == 2
    assert [len(x) for x in read_ranges(np.array([], dtype=np.int64))] == [0, 0]


def test_read_ranges_are_bounded_by_merging_the_smallest_gaps() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        ts = np.sort(rng.integers(0, 10_000 * WINDOW_NS, int(rng.integers(1, 300))))
        cap = int(rng.integers(1, 40))
        lo, hi = read_ranges(ts, cap)
        full_lo, full_hi = read_ranges(ts, 10**6)
        assert len(lo) == min(cap, len(full_lo))
        assert np.all(lo[1:] > hi[:-1])  # disjoint, sorted: no stored row read twice
        # every record's window is inside one range
        i = np.searchsorted(lo, ts, side="right") - 1
        assert np.all(lo[i] <= ts - WINDOW_NS) and np.all(ts + WINDOW_NS <= hi[i])
        # what is read beyond the uncapped ranges is the smallest gaps between them
        gaps = np.sort(full_lo[1:] - full_hi[:-1])
        unread = (hi - lo).sum() - (full_hi - full_lo).sum()
        assert unread == gaps[:len(gaps) - (len(lo) - 1)].sum()


def test_merge_ranges_merges_overlaps_in_any_order() -> None:
    lo, hi = merge_ranges(np.array([10, 0, 3, 30, 41]), np.array([12, 5, 4, 40, 50]))
    assert (lo.tolist(), hi.tolist()) == ([0, 10, 30, 41], [5, 12, 40, 50])
    lo, hi = merge_ranges(np.array([0, 2, 30]), np.array([10, 3, 40]), 1)
    assert (lo.tolist(), hi.tolist()) == ([0], [40])


def test_a_bucket_is_quarantined_at_once_when_permanent_or_after_its_attempts() -> None:
    from consumer.sink import BucketError, MarketStoreSink, QuarantinedError
    from consumer.writer import MarketStoreWriter

    sink = MarketStoreSink(MarketStoreWriter("http://127.0.0.1:9/rpc"), bucket_max_attempts=3)
    ok, flaky = sink.ids.id_of("OK/1Sec/TRADE"), sink.ids.id_of("FL/1Sec/TRADE")
    assert sink.quarantined_mask(np.array([ok, flaky])) is None
    assert not sink.note_failure(BucketError("FL/1Sec/TRADE", "timed out"))
    assert not sink.note_failure(BucketError("FL/1Sec/TRADE", "timed out"))
    assert sink.note_failure(BucketError("FL/1Sec/TRADE", "timed out again"))
    assert sink.quarantined["FL/1Sec/TRADE"] == "3 failures in a row, the last: timed out again"
    assert sink.note_failure(BucketError("LG/1Min/QUOTE", "another layout", permanent=True))
    lg = sink.ids.id_of("LG/1Min/QUOTE")
    later = sink.ids.id_of("LATER/1Min/QUOTE")  # an id above every quarantined one
    assert sink.quarantined_mask(np.array([ok, flaky, lg, later, flaky])).tolist() == \
        [False, True, True, False, True]
    with pytest.raises(QuarantinedError, match="another layout"):
        sink.add("quote", quote("LG", 1, BASE_NS), ("q", 0))
    sink.add("trade", trade("OK", 1, BASE_NS), ("t", 0))
    assert sink.pending == 1


def test_column_names_are_a_row_layouts_fields_and_a_plain_dtype_has_none() -> None:
    trade_row = buckets.DTYPES["TRADE"]
    assert buckets.column_names(trade_row) == trade_row.names
    assert buckets.column_names(trade_row)[0] == "Epoch"
    with pytest.raises(TypeError, match="not a structured dtype"):
        buckets.column_names(np.dtype(np.int64))
