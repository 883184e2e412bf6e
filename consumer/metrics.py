"""The consumer's Prometheus metrics, and the end-to-end latency samples the bench reads."""

from __future__ import annotations

from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.metrics import NAMESPACE
from consumer.sink import FlushResult
from schemas.spec import Kind

MAX_LATENCY_SAMPLES = 1_000_000  # receive-time latencies kept for the bench (8 MB)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter("consumer_events_written",
                               "Rows written to MarketStore, by data type", ["type"],
                               namespace=NAMESPACE, registry=registry)
        self.duplicates = Counter("consumer_duplicates_dropped",
                                  "Trades/quotes not written because MarketStore held them",
                                  namespace=NAMESPACE, registry=registry)
        self.batch = Histogram("consumer_batch_events", "Events per flushed batch",
                               buckets=(1, 10, 100, 1000, 5000, 10000, 25000, 50000, 100000),
                               namespace=NAMESPACE, registry=registry)
        self.write_latency = Histogram("consumer_write_seconds",
                                       "Time to flush one batch to MarketStore",
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                       namespace=NAMESPACE, registry=registry)
        self.e2e = Histogram("consumer_end_to_end_seconds",
                             "Producer receipt to queryable in MarketStore (sampled)",
                             buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                             namespace=NAMESPACE, registry=registry)
        self.lag = Gauge("consumer_lag", "High watermark minus position",
                         ["topic", "partition"], namespace=NAMESPACE, registry=registry)
        self.dead_letter = Counter("consumer_dead_letter",
                                   "Messages sent to the dead-letter topic", ["reason"],
                                   namespace=NAMESPACE, registry=registry)
        self.store_errors = Counter("consumer_marketstore_errors",
                                    "MarketStore failures (each one rewinds and backs off)",
                                    namespace=NAMESPACE, registry=registry)
        self.commits = Counter("consumer_commits", "Offset commits",
                               namespace=NAMESPACE, registry=registry)
        self.repairs = Counter("consumer_bucket_repairs",
                               "Buckets rebuilt after MarketStore duplicated rows on replay",
                               namespace=NAMESPACE, registry=registry)
        self.bucket_failures = Counter("consumer_bucket_failures",
                                       "Failures of one bucket's reads or writes while "
                                       "MarketStore answered", namespace=NAMESPACE,
                                       registry=registry)
        self.quarantined = Counter("consumer_buckets_quarantined",
                                   "Buckets isolated: their records go to the dead-letter topic",
                                   namespace=NAMESPACE, registry=registry)
        self.rows_read = Counter("consumer_dedupe_rows_read",
                                 "Stored rows read back to deduplicate trades and quotes",
                                 namespace=NAMESPACE, registry=registry)

    def observe_write(self, result: FlushResult) -> None:
        """Count a finished write (a write that held nothing counts nowhere)."""
        if not (result.rows_written or result.duplicates_dropped):
            return
        self.batch.observe(sum(result.rows_written.values()) + result.duplicates_dropped)
        self.write_latency.observe(result.seconds)
        for kind, n in result.rows_written.items():
            self.written.labels(Kind.of(kind).data_type).inc(n)
        self.duplicates.inc(result.duplicates_dropped)
        self.rows_read.inc(result.rows_read)


class LatencySamples:
    """End-to-end latencies of written batches: histogram samples and the bench's arrays.

    The arrays are bounded by samples, not batches: a replay writes batches of up to
    ``batch_max_events`` receive times each, and thousands of those were kept.
    """

    def __init__(self, histogram: Histogram, max_samples: int = MAX_LATENCY_SAMPLES) -> None:
        self.histogram = histogram
        self.max_samples = max_samples
        self.arrays: deque[np.ndarray] = deque()
        self.count = 0

    def add(self, received: list[np.ndarray], queryable_ns: int) -> None:
        """Latencies ending at ``queryable_ns``: when MarketStore acknowledged the write (the
        writer thread's clock), not when the loop noticed, which can be a poll later."""
        lat = queryable_ns - np.concatenate(received)
        self.arrays.append(lat)
        self.count += len(lat)
        while self.count > self.max_samples and len(self.arrays) > 1:
            self.count -= len(self.arrays.popleft())
        for v in lat[:: max(1, len(lat) // 20)]:
            self.histogram.observe(v / 1e9)
