"""The latency part of ``bench.consumer``: paced trades -> one consumer -> MarketStore, with
where each event's time went and the machine's state beside it.

Per written batch the consumer's ``on_written`` gives the write's own time; the batch's
latencies end when that write was acknowledged, so each event's latency splits into
*before its write* (publisher linger, broker, fetch, the batch's age, waiting for the write
in flight) and *its write*. Background load: ``busy`` processes spinning a core each, started
here and stopped by pid.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from bench.consumer.paced import paced_publisher
from bench.procstat import cpu_seconds, pid_listening_on
from common.config import Config
from common.runtime import tune_for_throughput
from consumer.service import ConsumerService, Options


@dataclass
class LatencyRun:
    latency_ms: np.ndarray  # received -> queryable, per event after the warm-up
    before_write_ms: np.ndarray  # received -> its batch's write started, per event
    write_ms: np.ndarray  # per batch: the write's own time
    batch_rows: np.ndarray  # per batch
    batch_buckets: np.ndarray  # per batch
    interval_ms: np.ndarray  # between consecutive writes' acknowledgements
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end
    # by process: the broker's per event published, the others' per event written
    cpu_us: dict[str, float] = field(default_factory=dict)
    written: float = 1.0  # the share of the published events written before the end
    # by process: cores used over the measured window (the publisher's over its sending)
    cores: dict[str, float] = field(default_factory=dict)


def spin() -> subprocess.Popen:
    """One busy core: a separate interpreter in a loop (stopped with :func:`stop`)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def run(config: Config, rate: int, seconds: float, symbols: list[str],
        busy: int = 0, warmup: float = 0.0) -> LatencyRun:
    tune_for_throughput()  # as the CLI does
    spinners = [spin() for _ in range(busy)]
    try:
        return _run(config, rate, seconds, symbols, warmup)
    finally:
        stop(spinners)


@dataclass
class _Batch:
    seconds: float  # the write's own time
    rows: int
    buckets: int
    written_ns: int
    latency_ns: np.ndarray  # its events' received -> queryable


def _run(config: Config, rate: int, seconds: float, symbols: list[str],
         warmup: float) -> LatencyRun:
    """Paced trades for ``warmup + seconds``; only the batches written after the warm-up
    count, and the CPU is read over that window: a broker started moments before spends
    its first tens of seconds compiling its hot paths, which a running deployment does not
    pay."""
    service = ConsumerService(config, Options(group_id=config.consumer.group_id))
    batches: list[_Batch] = []

    none = np.zeros(0, np.int64)
    last: list[np.ndarray] = [none]

    def on_written(result) -> None:  # type: ignore[no-untyped-def]
        # _complete_inflight samples the batch's latencies just before calling this (and
        # samples nothing for a batch without events)
        lat = service.latencies_ns[-1] if service.latencies_ns else none
        lat, last[0] = (none if lat is last[0] else lat), lat
        batches.append(_Batch(result.seconds, sum(result.rows_written.values()),
                              result.buckets, result.written_ns, lat))

    service.on_written = on_written
    assigned = threading.Event()
    orig_assign = service.partitions_assigned

    def on_assign(consumer, partitions):  # type: ignore[no-untyped-def]
        orig_assign(consumer, partitions)
        assigned.set()

    service.partitions_assigned = on_assign  # type: ignore[method-assign]
    service.open()  # subscribes with the callbacks above
    runner = threading.Thread(target=service.run, name="consumer-loop")
    runner.start()
    if not assigned.wait(60):
        service.stop()
        runner.join(60)
        raise SystemExit("the consumer was not assigned its partitions within 60 s")
    pids = _server_pids(config)
    spawn = multiprocessing.get_context("spawn")
    sent = spawn.Value("q", 0)
    publisher = spawn.Process(
        target=paced_publisher, args=(config, rate, warmup + seconds, symbols, sent))
    publisher.start()
    time.sleep(warmup)
    load0 = os.getloadavg()[0]
    cpu0 = {name: cpu_seconds(f"/proc/{pid}/stat") or 0.0 for name, pid in pids.items()}
    own0 = time.process_time()
    wall0 = time.monotonic()
    measured_from = time.time_ns()
    first = len(batches)
    # cores in use while the load is sent: the publisher's CPU as last read before it exits
    # (its /proc entry goes with it), the others' then too
    pub_stat = f"/proc/{publisher.pid}/stat"
    pub0 = pub1 = cpu_seconds(pub_stat) or 0.0
    pub_until = time.monotonic() + seconds + 60
    while publisher.is_alive() and time.monotonic() < pub_until:
        pub1 = cpu_seconds(pub_stat) or pub1
        publisher.join(0.2)
    sent_wall = time.monotonic() - wall0
    cores = {name: ((cpu_seconds(f"/proc/{pid}/stat") or 0.0) - cpu0[name]) / sent_wall
             for name, pid in pids.items()}
    cores["consumer"] = (time.process_time() - own0) / sent_wall
    cores["publisher"] = (pub1 - pub0) / seconds
    expected = sent.value or int((warmup + seconds) * rate)
    deadline = time.monotonic() + 30
    while sum(len(b.latency_ns) for b in batches) < expected and time.monotonic() < deadline:
        time.sleep(0.05)  # until every event is written (or 30 s passed)
    cpu = {name: (cpu_seconds(f"/proc/{pid}/stat") or 0.0) - cpu0[name]
           for name, pid in pids.items()}
    cpu["consumer"] = time.process_time() - own0  # this process: the consumer's threads
    written_all = sum(len(b.latency_ns) for b in batches)
    service.stop()
    runner.join(60)
    load1 = os.getloadavg()[0]
    if not warmup:  # the first second: new buckets' first reads
        measured_from = batches[0].written_ns + 1_000_000_000 if batches else 0
    window = [b for b in batches[first:] if b.written_ns >= measured_from]
    if not window:
        raise SystemExit("latency: no batch was written after the warm-up")
    written = sum(len(b.latency_ns) for b in window)
    lat = np.concatenate([b.latency_ns for b in window]) / 1e6
    write_ms = np.array([b.seconds * 1e3 for b in window])
    before = lat - np.repeat(write_ms, [len(b.latency_ns) for b in window])
    acks = np.array([b.written_ns for b in window], dtype=np.int64)
    published = seconds * rate
    return LatencyRun(lat, before, write_ms,
                      np.array([b.rows for b in window]),
                      np.array([b.buckets for b in window]),
                      np.diff(acks) / 1e6, (load0, load1),
                      {k: v / max(1, published if k == "broker" else written) * 1e6
                       for k, v in cpu.items()}, written_all / max(1, expected), cores)


def _server_pids(config: Config) -> dict[str, int]:
    """MarketStore's and the (first) broker's pids, by the ports they listen on."""
    out = {}
    ms = pid_listening_on(urlparse(config.marketstore.url).port or 80)
    broker = pid_listening_on(int(config.kafka.bootstrap_servers.split(",")[0]
                                  .rsplit(":", 1)[1]))
    if ms:
        out["marketstore"] = ms
    if broker:
        out["broker"] = broker
    return out


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def report(r: LatencyRun, rate: int, seconds: float, symbols: int, batch_ms: int,
           busy: int) -> str:
    return (
        f"latency at {rate:,} events/s over {symbols} symbols for {seconds:.0f} s, "
        f"batch_max_ms {batch_ms}, {busy} busy core(s) beside it, load average "
        f"{r.load[0]:.1f} -> {r.load[1]:.1f} (received_ns -> queryable): "
        f"p50 {pct(r.latency_ms, 50):.1f} ms, p99 {pct(r.latency_ms, 99):.1f} ms, "
        f"max {r.latency_ms.max():.1f} ms, n={len(r.latency_ms):,}\n"
        f"  before its write p50 {pct(r.before_write_ms, 50):.1f} / p99 "
        f"{pct(r.before_write_ms, 99):.1f} ms; writes: {len(r.write_ms)} of "
        f"{pct(r.batch_rows, 50):,.0f} rows over {pct(r.batch_buckets, 50):.0f} buckets "
        f"(median), write p50 {pct(r.write_ms, 50):.1f} / p99 {pct(r.write_ms, 99):.1f} ms, "
        f"one every {pct(r.interval_ms, 50):.1f} ms (p50; p99 {pct(r.interval_ms, 99):.1f})\n"
        f"  written within 30 s of the last send: {r.written:.0%}; CPU per event: "
        + ", ".join(f"{k} {v:.2f} µs" for k, v in r.cpu_us.items())
        + f"\n  cores busy: {sum(r.cores.values()):.2f} of {os.cpu_count()} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in r.cores.items())
        + "); a stage that finds every core taken waits for one")
