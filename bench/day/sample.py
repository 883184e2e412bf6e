"""What bench.day samples while the day plays: each process's CPU and memory, the consumer's
Prometheus metrics (written events, lag, end-to-end histogram), and their per-minute view."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from bench.procstat import cpu_seconds

PREFIX = "massive_fetcher_"


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def dir_bytes(path: Path, only: tuple[str, ...] = ()) -> int:
    """Bytes on disk under ``path`` (in the top-level entries whose name starts with one of
    ``only``, when given)."""
    total = 0
    for top in path.iterdir() if path.exists() else ():
        if only and not top.name.startswith(only):
            continue
        for root, _, files in os.walk(top):
            for name in files:
                with contextlib.suppress(OSError):  # a segment deleted meanwhile
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def partition_skew(bootstrap: str, topic: str) -> tuple[int, float] | None:
    """(records, the fullest partition's records over the mean) of ``topic``: records are
    keyed by symbol, so a hot symbol's partition carries more than its share."""
    from confluent_kafka import Consumer, TopicPartition

    client = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-day-skew",
                       "enable.auto.commit": False})
    try:
        meta = client.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        counts = []
        for p in sorted(meta.partitions):
            low, high = client.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            counts.append(high - low)
    finally:
        client.close()
    total = sum(counts)
    return (total, max(counts) / (total / len(counts))) if total else None


@dataclass
class ConsumerView:
    written: float = 0.0  # rows written + duplicates dropped
    lag: float = 0.0
    e2e: dict[float, float] = field(default_factory=dict)  # cumulative histogram, le -> count


def metric_samples(url: str) -> Iterator[PromSample]:
    """Every sample a Prometheus endpoint exposes."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        yield from family.samples


def scrape(url: str) -> ConsumerView:
    view = ConsumerView()
    for s in metric_samples(url):
        if s.name in (PREFIX + "consumer_events_written_total",
                      PREFIX + "consumer_duplicates_dropped_total"):
            view.written += s.value
        elif s.name == PREFIX + "consumer_lag":
            view.lag += s.value
        elif s.name == PREFIX + "consumer_end_to_end_seconds_bucket":
            view.e2e[float(s.labels["le"])] = s.value
    return view


def quantile(q: float, deltas: dict[float, float]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear within the bucket."""
    bounds = sorted(deltas)
    total = deltas[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = deltas[bound]
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            share = (rank - prev_count) / (count - prev_count) if count > prev_count else 1
            return prev_bound + (bound - prev_bound) * share
        prev_bound, prev_count = bound, count
    return prev_bound


def go_heap_goal_mib(metrics_url: str) -> float | None:
    """The heap size at which a Go server (MarketStore) collects next: with the default GOGC
    twice the heap that was live after its last collection. Against its resident size it
    tells data the server holds from memory its collector has not given back."""
    try:
        return next((s.value / 2**20 for s in metric_samples(metrics_url)
                     if s.name == "go_memstats_next_gc_bytes"), None)
    except OSError:
        return None


@dataclass
class Sample:
    t: float
    cpu: dict[str, float | None]
    rss: dict[str, float | None]
    consumer: ConsumerView | None
    go_heap_goal: float | None = None  # MiB, MarketStore's (go_heap_goal_mib)


class Sampler(threading.Thread):
    """Every ``every_s``: CPU seconds and resident MiB of each named pid, the consumer's
    metrics and, given its metrics URL, MarketStore's Go heap goal."""

    def __init__(self, pids: dict[str, int], metrics_url: str, every_s: float = 2.0,
                 go_metrics_url: str | None = None) -> None:
        super().__init__(name="day-sampler", daemon=True)
        self.pids, self.metrics_url, self.every_s = pids, metrics_url, every_s
        self.go_metrics_url = go_metrics_url
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def take(self) -> Sample:
        try:
            view: ConsumerView | None = scrape(self.metrics_url)
        except OSError:
            view = None
        sample = Sample(time.monotonic(),
                        {n: cpu_seconds(f"/proc/{p}/stat") for n, p in self.pids.items()},
                        {n: rss_mib(p) for n, p in self.pids.items()}, view,
                        go_heap_goal_mib(self.go_metrics_url) if self.go_metrics_url else None)
        self.samples.append(sample)
        return sample

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self.take()

    def stop(self) -> Sample:
        self._stop_event.set()
        self.join(10)
        return self.take()
