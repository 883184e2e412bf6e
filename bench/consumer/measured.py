"""One consumer measured in a process of its own (the throughput part of ``bench.consumer``).

The consumer runs in a spawned process so that its CPU figure is the consumer's alone: not the
benchmark's publisher (its librdkafka threads) and not the benchmark's own data, which the
consumer's garbage collector would otherwise walk. The process is tuned as the CLI tunes it.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import resource
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

import consumer.sink as sink_module
from bench.procstat import cpu_seconds
from common.config import Config
from common.runtime import tune_for_throughput
from consumer.dedupe import read_ranges
from consumer.service import ConsumerService, Options


def _process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread, by Python thread name or librdkafka's (Linux only)."""
    names = {str(t.native_id): t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except FileNotFoundError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        cpu = cpu_seconds(f"/proc/self/task/{tid}/stat")
        if cpu is None:
            continue  # the thread ended meanwhile
        name = names.get(tid, comm)
        # group librdkafka's per-broker threads and numbered Python pool threads
        key = name.split("_")[0] if name.startswith("marketstore") else name
        out[key] = out.get(key, 0.0) + cpu
    return out


def _peak_resident_mib() -> int:
    """This process's own high-water mark (ru_maxrss would include the parent's resident
    size at fork: the kernel carries it across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except FileNotFoundError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


@dataclass
class Measured:
    rate: float  # events/s wall, first message to last write
    events: int  # events written
    cpu: float  # CPU seconds of the whole consumer process
    loop_cpu: float  # CPU seconds of its loop thread
    per_thread: dict[str, float]
    faults: int  # minor page faults
    rss_mib: int  # peak resident size
    rows_read: int  # stored rows the dedupe read back


def throughput(config: Config, n: int, timeout_s: float = 600.0,
               whole_span: bool = False) -> Measured:
    """Runs one consumer in a spawned process until ``n`` events are written.

    ``whole_span``: its dedupe reads one range per bucket, min..max of the batch's records
    (how it read before ``consumer.dedupe.read_ranges``), for comparison."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=measure_consumer, args=(config, n, send, whole_span))
    child.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise SystemExit(f"the consumer did not write every event within {timeout_s:.0f} s")
        result = receive.recv()
    finally:
        child.join(60)
    return result  # type: ignore[no-any-return]


def measure_consumer(config: Config, n: int, conn: Connection, whole_span: bool = False
                     ) -> None:
    """Consumes until ``n`` events are written (or seen as already stored); sends a
    :class:`Measured` down ``conn``."""
    if whole_span:
        sink_module.read_ranges = functools.partial(read_ranges, max_ranges=1)
    tune_for_throughput()
    service = ConsumerService(config, Options(group_id=config.consumer.group_id))
    first: list[float] = []
    orig_handle = service._handle_many

    def handle(msgs):  # type: ignore[no-untyped-def]
        if msgs and not first:
            first.append(time.perf_counter())
        orig_handle(msgs)

    service._handle_many = handle  # type: ignore[method-assign]
    written = [0]
    last = [0.0]
    threads: dict[str, float] = {}

    def on_written(result) -> None:  # type: ignore[no-untyped-def]
        written[0] += sum(result.rows_written.values()) + result.duplicates_dropped
        last[0] = time.perf_counter()
        if written[0] >= n:
            threads.update(_thread_cpu())  # before the threads end at close
            service.stop()

    service.on_written = on_written
    loop_cpu = [0.0]

    def run() -> None:  # the consumer's own loop thread: poll, decode, build rows
        t = time.thread_time()
        try:
            service.run()
        finally:
            loop_cpu[0] = time.thread_time() - t

    before = _thread_cpu()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0 = _process_cpu()
    service.open()
    runner = threading.Thread(target=run, name="consumer-loop")
    runner.start()
    runner.join(600)
    cpu = _process_cpu() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults = usage.ru_minflt - faults0
    per_thread = {k: v - before.get(k, 0.0) for k, v in threads.items()}
    conn.send(Measured(written[0] / (last[0] - first[0]), written[0], cpu, loop_cpu[0],
                       per_thread, faults, _peak_resident_mib(), service.sink.dedupe_rows_read))
    conn.close()
