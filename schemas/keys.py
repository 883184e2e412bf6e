"""The Kafka key of a record: its symbol, spelled the way MarketStore buckets spell it.

The consumer's exactly-once writes rest on one writer per bucket, and Kafka gives one
writer per partition. So every record bound for one bucket must land on one partition,
which holds only if the key is the bucket's symbol, not the ticker as Massive spelled it:
``BRK/A`` and ``BRK.A`` are one bucket (``BRK.A/...``) and must be one key. Producer,
backfill and consumer all take the mapping from here; the compiled frame encoder
(``schemas/_native.c``) applies the same one and is checked against :func:`symbol_key`
at start (``producer.nativeframes.NativeFrames``).

The mapping is pure and total: it never rejects a symbol. Whether a symbol can be a
MarketStore key at all is the consumer's question (``consumer.buckets.bucket_symbol``),
answered with a dead letter, not a refused produce.
"""

from __future__ import annotations


def symbol_key(symbol: str) -> str:
    """``symbol`` as bucket names and Kafka keys spell it (``BRK/A`` -> ``BRK.A``)."""
    return symbol.replace("/", ".")
