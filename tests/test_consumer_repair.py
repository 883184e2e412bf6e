"""Repairing buckets MarketStore's WAL replay duplicated: in one go, and after a crash mid-way."""

from __future__ import annotations

import numpy as np
import pytest

from consumer import buckets
from consumer.sink import MarketStoreSink, _shadow_keys
from consumer.writer import MarketStoreError, MarketStoreWriter
from tests.support.testkit import comparable, expected_buckets, read_bucket, trades_stream, unique

pytestmark = pytest.mark.integration


class CrashingWriter(MarketStoreWriter):
    """Dies (raises) when the repaired bucket itself is about to be rewritten."""

    def __init__(self, url: str, crash_on: str) -> None:
        super().__init__(url)
        self.crash_on = crash_on

    def write(self, arrays):  # type: ignore[no-untyped-def]
        if self.crash_on in arrays:
            raise MarketStoreError("simulated crash between destroy and rewrite")
        return super().write(arrays)


def _duplicated_bucket(url: str) -> tuple[str, dict[str, np.ndarray]]:
    sym = unique("RP")
    recs = [("trade", t) for t in trades_stream(sym, 300)]
    expected = expected_buckets(recs)
    (tbk, rows), = expected.items()
    writer = MarketStoreWriter(url)
    writer.write({tbk: rows})
    writer.write({tbk: rows[100:250]})  # what a WAL replay does: the same rows again
    assert len(read_bucket(url, tbk)) == 450
    return tbk, expected


def _equal(url: str, tbk: str, want: np.ndarray) -> None:
    got = read_bucket(url, tbk)
    assert got is not None
    assert comparable(tbk, got).tobytes() == comparable(tbk, want).tobytes()
    for key in _shadow_keys(tbk):
        assert read_bucket(url, key) is None, f"{key} left behind"


def test_repair_removes_duplicates(marketstore_url: str) -> None:
    tbk, expected = _duplicated_bucket(marketstore_url)
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    sink.repair(tbk)
    assert sink.repairs == 1
    _equal(marketstore_url, tbk, expected[tbk])


@pytest.mark.parametrize("page_rows", [37, 200])
def test_repair_goes_page_by_page(marketstore_url: str, monkeypatch: pytest.MonkeyPatch,
                                  page_rows: int) -> None:
    """Pages smaller than one second's rows (143 here: the whole interval is read at once)
    and larger ones ending inside an interval (the interval moves to the next page)."""
    monkeypatch.setattr("consumer.sink.REPAIR_PAGE_ROWS", page_rows)
    tbk, expected = _duplicated_bucket(marketstore_url)
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    pages = list(sink._pages(tbk))
    assert sum(len(p) for p in pages) == 450 and len(pages) > 1
    sink.repair(tbk)
    assert sink.repairs == 1
    _equal(marketstore_url, tbk, expected[tbk])


def test_a_shadow_doubled_by_wal_replay_still_finishes_the_repair(marketstore_url: str) -> None:
    """A kill -9 after the marker was written can replay the shadow's write: its copies are
    dropped, and the repair completes instead of stalling on a count mismatch."""
    tbk, expected = _duplicated_bucket(marketstore_url)
    shadow, marker = _shadow_keys(tbk)
    writer = MarketStoreWriter(marketstore_url)
    writer.write({shadow: expected[tbk]})
    writer.write({shadow: expected[tbk][:40]})
    mark = np.zeros(1, dtype=[("Epoch", "<i8"), ("Rows", "<i8")])
    mark["Epoch"], mark["Rows"] = 1_000_000_000, len(expected[tbk])
    writer.write({marker: mark})
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    sink._load_tails(np.array([sink.ids.id_of(tbk)]))
    _equal(marketstore_url, tbk, expected[tbk])


def test_repair_interrupted_after_destroy_is_finished_by_the_next_user(
        marketstore_url: str) -> None:
    tbk, expected = _duplicated_bucket(marketstore_url)
    crashing = MarketStoreSink(CrashingWriter(marketstore_url, crash_on=tbk))
    with pytest.raises(MarketStoreError):
        crashing.repair(tbk)
    assert read_bucket(marketstore_url, tbk) is None  # the bucket is gone at this point
    # the next member to use the bucket (first tail load) completes the repair
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    bid = sink.ids.id_of(tbk)
    sink._load_tails(np.array([bid]))
    _equal(marketstore_url, tbk, expected[tbk])
    assert sink._tails.get(bid).max_seq == 300
    assert buckets.VARIABLE["TRADEREPAIR"]


def test_a_bucket_of_another_layout_is_reported_not_corrupted(marketstore_url: str) -> None:
    from tests.support.testkit import trade

    sym = unique("LG")
    legacy = np.zeros(1, dtype=[("Epoch", "<i8"), ("Nanoseconds", "<i4"), ("Price", "<f8"),
                                ("Size", "<u8")])
    legacy["Epoch"], legacy["Price"], legacy["Size"] = 1_764_000_000, 1.0, 5
    tbk = f"{sym}/1Sec/TRADE"
    MarketStoreWriter(marketstore_url).write({tbk: legacy})
    sink = MarketStoreSink(MarketStoreWriter(marketstore_url))
    sink.add("trade", trade(sym, 1, 1_764_000_001_000_000_000), ("t", 0))
    with pytest.raises(MarketStoreError, match="another layout"):
        sink.flush()
    assert len(read_bucket_raw(marketstore_url, tbk)) == 1


def read_bucket_raw(url: str, tbk: str) -> np.ndarray:
    return MarketStoreWriter(url).query([tbk])[tbk]
