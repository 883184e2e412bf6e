"""consumer.writer's Write calls: many buckets are cut into calls of a bounded size."""

from __future__ import annotations

import numpy as np

from consumer import buckets
from consumer.writer import MarketStoreWriter, group_buckets, split_groups
from tests.support.testkit import BASE_NS, bar, expected_buckets, trades_stream, unique


def _arrays(symbols: list[str], rows: int) -> dict[str, np.ndarray]:
    out = {}
    for i, sym in enumerate(symbols):
        recs = [("trade", t) for t in trades_stream(sym, rows + i % 3, BASE_NS, 1_000_000)]
        out.update(expected_buckets(recs))
    for sym in symbols[:2]:  # a second layout in the same calls
        tbk, row = buckets.to_row("bar", bar(sym, BASE_NS))
        out[tbk] = buckets.rows_to_array(buckets.attr_group(tbk), [row])
    return out


def test_split_keeps_every_row_once_and_bounds_each_call() -> None:
    arrays = _arrays([f"S{i}" for i in range(7)], 4)
    groups = group_buckets(arrays)
    calls = split_groups(groups, 3)
    assert [sum(len(g[2]) for g in call) for call in calls] == [3, 3, 3]
    seen: dict[str, np.ndarray] = {}
    for call in calls:
        for _attr, rows, slices in call:
            assert sum(n for _st, n in slices.values()) == len(rows)
            for tbk, (st, n) in slices.items():
                assert tbk not in seen
                seen[tbk] = rows[st:st + n]
    assert seen.keys() == arrays.keys()
    for tbk, rows in arrays.items():
        assert seen[tbk].tobytes() == rows.tobytes()
    (one_call,) = split_groups(groups, 100)
    assert [g[2] for g in one_call] == [g[2] for g in groups]


def test_a_write_over_the_bound_lands_every_bucket(marketstore_url: str) -> None:
    symbols = [unique("WB") for _ in range(5)]
    arrays = _arrays(symbols, 3)
    writer = MarketStoreWriter(marketstore_url, max_buckets_per_write=2)
    assert writer.write(arrays) == sum(len(a) for a in arrays.values())
    stored = writer.query(list(arrays))
    for tbk, rows in arrays.items():
        assert len(stored[tbk]) == len(rows), tbk
