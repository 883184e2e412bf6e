"""What dedupe and repair read from a real MarketStore: around the batch, not the bucket."""

from __future__ import annotations

import pytest

from consumer.sink import MarketStoreSink
from consumer.writer import MarketStoreWriter
from tests.support.testkit import (
    BASE_NS,
    assert_buckets_equal,
    expected_buckets,
    trades_stream,
    unique,
)

pytestmark = pytest.mark.integration

DAY = 86_400 * 10**9
# a trade every 300 ms: no stored row lies exactly a dedupe window (1 s) from another
STEP = 300_000_000


def _day(sym: str, day: int, n: int, first_seq: int = 1) -> list[tuple[str, dict]]:
    return [("trade", t) for t in trades_stream(sym, n, BASE_NS + day * DAY, STEP, first_seq)]


def test_a_backfill_around_a_stored_day_reads_only_its_own_neighbourhood(
        marketstore_url: str) -> None:
    """Days 10 and 12 stored; a batch of days 9 and 11 (same sequence numbers: other days,
    other events) plus a redelivery of 50 stored day-10 trades: only the rows within a second
    of the batch's records are read, and the bucket ends up exact."""
    sym = unique("DR")
    stored = _day(sym, 10, 30_000) + _day(sym, 12, 30_000)
    (tbk, rows), = expected_buckets(stored).items()
    MarketStoreWriter(marketstore_url).write({tbk: rows})
    batch = _day(sym, 11, 1000) + _day(sym, 9, 1000) + stored[5000:5050] + _day(sym, 11, 5)
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    for kind, record in batch:
        sink.add(kind, record, ("trades", 0))
    result = sink.flush()
    assert result.rows_written == {"trade": 2000}
    assert result.duplicates_dropped == 55
    # the bucket's tail (its last tail_rows rows, read once), then the 50 redelivered trades'
    # windows: they span 15 s and hold 3 more stored rows at each end; days 9 and 11 hold
    # none. Reading min..max time would have read day 10 whole (30,000 rows).
    assert result.rows_read == sink.tail_rows + 56 == sink.dedupe_rows_read
    assert_buckets_equal(marketstore_url, expected_buckets(stored + batch))


def test_repair_detection_reads_only_what_was_written_recently(marketstore_url: str) -> None:
    """A WAL replay doubles only what was written since its last checkpoint: after an error
    the sink reads back those ranges, not the 30,000 rows stored before."""
    sym = unique("RR")
    old = _day(sym, 10, 30_000)
    (tbk, rows), = expected_buckets(old).items()
    writer = MarketStoreWriter(marketstore_url)
    writer.write({tbk: rows})
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    recent = _day(sym, 11, 200) + _day(sym, 12, 100)
    for kind, record in recent:
        sink.add(kind, record, ("trades", 0))
    sink.flush()
    before = sink.writer.rows_read
    assert sink.repair_recent() == 0
    assert sink.writer.rows_read - before == 300

    (_, fresh), = expected_buckets(recent).items()
    writer.write({tbk: fresh[:150]})  # what a WAL replay does: recent rows appended again
    assert sink.repair_recent() == 1
    assert sink.repairs == 1
    assert_buckets_equal(marketstore_url, expected_buckets(old + recent))
    assert not sink._tails.loaded[sink.ids.id_of(tbk)]  # reloaded from the rebuilt bucket
