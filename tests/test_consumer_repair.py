"""Repairing buckets MarketStore's WAL replay duplicated: in one go, and after a crash mid-way."""

from __future__ import annotations

import numpy as np
import pytest

from consumer import buckets
from consumer.sink import MarketStoreSink, _shadow_keys
from consumer.testkit import comparable, expected_buckets, read_bucket, trades_stream, unique
from consumer.writer import MarketStoreError, MarketStoreWriter

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
    from consumer.testkit import trade

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
