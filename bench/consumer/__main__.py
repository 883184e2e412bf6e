"""``python -m bench.consumer``: Kafka -> MarketStore events/s for one consumer, and latency.

1. Ceiling: the same batches as prebuilt numpy arrays written with the consumer's
   multi-bucket ``DataService.Write`` (no Kafka, no decoding, no dedupe): the most this
   MarketStore takes on this machine.
2. Throughput: N events (trades and quotes over S symbols, plus some bars) pre-published to
   fresh topics; one ``ConsumerService`` (the real one: decode, dead-letter checks, dedupe,
   write, delayed verified commits) consumes them into fresh buckets; the clock runs from
   the first message to the last flush. The consumer runs in a spawned process, tuned as
   the CLI tunes it (``common.runtime``), so that its CPU is its own: events/s per core
   divides by that process's CPU seconds, all threads (the broker and MarketStore run beside
   it on the same cores), and the split by thread is printed (the loop thread's figure is the
   one comparable to bench.producer's main-thread "per core"), with page faults and peak
   resident memory. (Run in the benchmark's process, as before, the consumer's garbage
   collector walked the benchmark's own N event dicts: a third of its CPU.)
3. Latency: a publisher process sends trades at a fixed rate (default 50k events/s) with
   ``received_ns`` = its clock at send; the latency of an event is (time its batch's write
   returned, which is when it is queryable) - received_ns. The publisher produces with the
   producer's own Kafka properties (``linger.ms`` 5 and all), so Kafka's whole share is
   included: the wait for a batch, the broker, and the consumer's fetch defaults
   (fetch.min.bytes 64 KiB / fetch.wait.max.ms 10).

Kafka: $KAFKA_BOOTSTRAP_SERVERS, MarketStore: $MARKETSTORE_URL; whichever is unset is started
for the run (``bench.services``). Topics and symbols are unique per run.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from confluent_kafka import Producer

from bench.consumer import latency
from bench.consumer.measured import throughput
from bench.services import bench_services
from common.config import Config, ConsumerConfig
from consumer import buckets
from consumer.writer import MarketStoreWriter, build_write_requests, group_buckets
from schemas.codec import make_codec
from schemas.topics import ensure_topics
from tests.support.testkit import BASE_NS, bar, make_config, quote, trade


def _events(n: int, symbols: list[str], start_seq: int = 1) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    per = max(1, n // len(symbols))
    for j, s in enumerate(symbols):
        for i in range(per):
            ts = BASE_NS + i * 3_000_000 + j
            if i % 100 == 99:
                out.append(("bar", bar(s, BASE_NS + (i // 100) * 60 * 10**9)))
            elif i % 2:
                out.append(("trade", trade(s, start_seq + i, ts)))
            else:
                out.append(("quote", quote(s, start_seq + i, ts)))
    # interleave symbols like a live feed
    out.sort(key=lambda kr: kr[1].get("sip_timestamp_ns") or kr[1].get("start_ns"))
    return out


def _publish(config: Config, events: list[tuple[str, dict]]) -> None:
    codec = make_codec(config)
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers,
                         "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000})
    topic = {"bar": config.kafka.topics.bars, "trade": config.kafka.topics.trades,
             "quote": config.kafka.topics.quotes}
    for kind, rec in events:
        while True:
            try:
                producer.produce(topic[kind], codec.encode(kind, rec), rec["symbol"].encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)


def ceiling(url: str, events: list[tuple[str, dict]], batch: int) -> float:
    writer = MarketStoreWriter(url)
    prepared = []
    for i in range(0, len(events), batch):
        rows: dict[str, list[tuple]] = {}
        for kind, rec in events[i:i + batch]:
            tbk, row = buckets.to_row(kind, rec)
            rows.setdefault(tbk, []).append(row)
        arrays = {t: buckets.sort_rows(buckets.attr_group(t),
                                       buckets.rows_to_array(buckets.attr_group(t), r))
                  for t, r in rows.items()}
        prepared.append(build_write_requests(group_buckets(arrays)))
    t0 = time.perf_counter()
    for reqs in prepared:  # only the RPCs are timed: the request bodies are prebuilt
        writer.write_requests(reqs)
    return len(events) / (time.perf_counter() - t0)


def _throughput(config: Config, args: argparse.Namespace, run: str, ceil: float) -> None:
    syms = [f"BC{run}{i}" for i in range(args.symbols)]
    events = _events(args.events, syms)
    print(f"events: {len(events):,} over {len(syms)} symbols, batch {args.batch:,}")
    t = time.perf_counter()
    _publish(config, events)
    print(f"published in {time.perf_counter() - t:.1f} s")
    count = len(events)
    del events  # the consumer runs in its own process; this one only waits
    m = throughput(config, count)
    rate, n, cpu, loop_cpu, per_thread, faults, rss_mib = (
        m.rate, m.events, m.cpu, m.loop_cpu, m.per_thread, m.faults, m.rss_mib)
    print(f"consumer: {n:,} events in MarketStore at {rate:,.0f} events/s wall, "
          f"{n / cpu:,.0f} events per CPU-second of the consumer process (all its threads), "
          f"{n / loop_cpu:,.0f} per CPU-second of its loop thread")
    print("  CPU per event by thread: " + ", ".join(
        f"{name} {sec / n * 1e6:.2f} µs" for name, sec in
        sorted(per_thread.items(), key=lambda kv: -kv[1]) if sec / n * 1e6 >= 0.01)
        + f"; total {cpu / n * 1e6:.2f} µs; {faults / n:.3f} page faults per event; "
        f"peak resident {rss_mib} MiB")
    print(f"ratio consumer/ceiling: {rate / ceil:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.consumer", description=__doc__)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="latency: seconds of paced load before the measured window (a "
                         "just-started broker compiles its hot paths meanwhile)")
    ap.add_argument("--batch-ms", type=int, default=ConsumerConfig().batch_max_ms,
                    help="consumer.batch_max_ms for the throughput run (default: the default)")
    ap.add_argument("--latency-batch-ms", type=int, default=ConsumerConfig().batch_max_ms,
                    help="consumer.batch_max_ms for the latency run (a latency setting)")
    ap.add_argument("--latency-write-ratio", type=float,
                    default=ConsumerConfig().batch_write_ratio,
                    help="consumer.batch_write_ratio for the latency run")
    ap.add_argument("--busy", type=int, default=0,
                    help="latency again with this many busy cores beside it (0: idle only)")
    ap.add_argument("--latency-only", action="store_true",
                    help="skip the ceiling and throughput parts")
    args = ap.parse_args()
    with bench_services() as svc:
        run_bench(args, svc.kafka_bootstrap, svc.marketstore_url)


def run_bench(args: argparse.Namespace, bootstrap: str, url: str) -> None:
    run = uuid.uuid4().hex[:6].upper()
    config = make_config(bootstrap, url, name=f"bench-{run.lower()}", partitions=6,
                         batch_max_events=args.batch, batch_max_ms=args.batch_ms,
                         commit_delay_ms=1500)
    ensure_topics(config)
    ceil = ceiling(url, _events(args.events, [f"BX{run}{i}" for i in range(args.symbols)]),
                   args.batch)
    print(f"ceiling (raw multi-bucket write of prebuilt arrays): {ceil:,.0f} events/s; "
          f"load average {os.getloadavg()[0]:.1f}")
    if not args.latency_only:
        _throughput(config, args, run, ceil)
    for busy in (0, args.busy) if args.busy else (0,):
        lconf = make_config(bootstrap, url, name=f"benchlat{busy}-{run.lower()}",
                            partitions=6, batch_max_events=args.batch,
                            batch_max_ms=args.latency_batch_ms, commit_delay_ms=1500,
                            batch_write_ratio=args.latency_write_ratio)
        ensure_topics(lconf)
        lrun = latency.run(lconf, args.rate, args.seconds,
                           [f"BL{run}{busy}x{i}" for i in range(args.symbols)], busy,
                           args.warmup)
        print(latency.report(lrun, args.rate, args.seconds, args.symbols,
                             args.latency_batch_ms, busy)
              + f" (batch_write_ratio {args.latency_write_ratio:g})"
              + f"\n  rate / ceiling {args.rate / ceil:.2f}")


if __name__ == "__main__":
    main()
