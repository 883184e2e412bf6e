"""Every bucket's row count and a checksum of its rows, to compare two MarketStores."""

from __future__ import annotations

import hashlib

import numpy as np

from consumer.writer import MarketStoreWriter

BUCKETS_PER_QUERY = 250


def bucket_names(symbols: list[str]) -> list[str]:
    return [f"{s}/{rest}" for s in symbols
            for rest in ("1Sec/TRADE", "1Min/QUOTE", "1Min/OHLCV")]


def digest(rows: np.ndarray) -> str:
    """A checksum of the rows in stored order (the same rows written in another batching
    give the same bytes: MarketStore keeps a bucket's rows in time order)."""
    return hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).hexdigest()


def fingerprints(url: str, tbks: list[str], start_ns: int, end_ns: int
                 ) -> dict[str, tuple[int, str]]:
    writer = MarketStoreWriter(url)
    out: dict[str, tuple[int, str]] = {}
    for i in range(0, len(tbks), BUCKETS_PER_QUERY):
        for tbk, rows in writer.query(tbks[i:i + BUCKETS_PER_QUERY], start_ns, end_ns).items():
            out[tbk] = (len(rows), digest(rows))
    return out


def differences(live: dict[str, tuple[int, str]], rebuilt: dict[str, tuple[int, str]]
                ) -> list[str]:
    """One line per bucket that differs (missing on one side, other count, other rows)."""
    out = []
    for tbk in sorted(set(live) | set(rebuilt)):
        a, b = live.get(tbk), rebuilt.get(tbk)
        if a is None or b is None:
            out.append(f"{tbk}: only in the {'rebuild' if a is None else 'live run'}")
        elif a[0] != b[0]:
            out.append(f"{tbk}: {a[0]:,} rows live, {b[0]:,} rebuilt")
        elif a[1] != b[1]:
            out.append(f"{tbk}: {a[0]:,} rows each, different checksums")
    return out
