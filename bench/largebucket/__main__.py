"""``python -m bench.largebucket``: the consumer's CPU per event into a bucket of millions of rows
against an empty one, for a backfill that interleaves days around stored ones.

1. A trade bucket is filled straight through the writer (not Kafka) with ``--stored`` rows:
   days 10 and 12, evenly spaced, sequence numbers from 1 each day (as Massive's).
2. ``--events`` backfilled trades of days 9 and 11 (the same spacing and sequence numbers:
   other days, other events), interleaved in chunks of ``--chunk`` as a backfill with
   several windows in flight publishes them, go to fresh topics twice: once for the large
   bucket's symbol, once for a symbol without a bucket.
3. Each set is consumed by one ``ConsumerService`` in a spawned process of its own
   (:func:`bench.consumer.measured.throughput`); its CPU (all threads) per event and the
   stored rows its dedupe read back are printed, then the ratio large / empty.

Every record is below the large bucket's high-water mark (day 12), so each batch goes
through the dedupe read: this is the case the consumer once paid for with whole stored days.

4. Repair after a kill -9 of MarketStore (only with the bench's own MarketStore): a sink
   writes ``--recent`` new trades (day 13) into the large bucket and into a fresh one, the
   server is killed and started again (its WAL replay appends recent rows a second time),
   and ``MarketStoreSink.repair_recent`` runs for each: its CPU per recent event, the rows
   it read, the buckets it rebuilt, and the ratio large / empty.

Services: a private MarketStore and Kafka on free loopback ports (the build cache is the
user's), stopped by pid at the end; ``KAFKA_BOOTSTRAP_SERVERS`` / ``MARKETSTORE_URL`` use
running ones instead.
"""

from __future__ import annotations

import argparse
import time
import uuid

import numpy as np

from bench.consumer.__main__ import _publish
from bench.consumer.measured import Measured, throughput
from bench.services import BenchServices, bench_services
from consumer import buckets
from consumer.sink import MarketStoreSink
from consumer.writer import MarketStoreError, MarketStoreWriter
from schemas.topics import ensure_topics
from services.native import NativeServices
from tests.support.testkit import BASE_NS, make_config, trade

DAY = 86_400 * 10**9
FILL_CHUNK = 250_000  # rows per write while filling


def day_rows(symbol: str, day: int, n: int, step_ns: int) -> np.ndarray:
    """``n`` trade rows of one day as the consumer stores them (one template row, varied)."""
    _, row = buckets.to_row("trade", trade(symbol, 1, BASE_NS))
    rows = np.repeat(buckets.rows_to_array("TRADE", [row]), n)
    ts = BASE_NS + day * DAY + np.arange(n, dtype=np.int64) * step_ns
    rows["SipTimestamp"], rows["SequenceNumber"] = ts, np.arange(1, n + 1)
    rows["Epoch"], rows["Nanoseconds"] = ts // 10**9, ts % 10**9
    return rows


def fill(url: str, symbol: str, stored: int, step_ns: int) -> float:
    """Write ``stored`` rows (days 10 and 12) into ``symbol``'s trade bucket; seconds taken."""
    writer = MarketStoreWriter(url, timeout_s=120)
    tbk = f"{symbol}/1Sec/TRADE"
    t0 = time.perf_counter()
    for day in (10, 12):
        rows = day_rows(symbol, day, stored // 2, step_ns)
        for i in range(0, len(rows), FILL_CHUNK):
            writer.write({tbk: rows[i:i + FILL_CHUNK]})
    return time.perf_counter() - t0


def backfill_events(symbol: str, n: int, step_ns: int, chunk: int) -> list[tuple[str, dict]]:
    """Days 9 and 11, ``n // 2`` trades each, alternating in chunks (parallel windows)."""
    days = [[("trade", trade(symbol, i + 1, BASE_NS + d * DAY + i * step_ns,
                             source="backfill")) for i in range(n // 2)] for d in (9, 11)]
    out: list[tuple[str, dict]] = []
    for i in range(0, n // 2, chunk):
        out += days[0][i:i + chunk] + days[1][i:i + chunk]
    return out


def stored_in(url: str, symbol: str, day: int) -> int:
    rows = MarketStoreWriter(url, timeout_s=120).query(
        [f"{symbol}/1Sec/TRADE"], BASE_NS + day * DAY, BASE_NS + (day + 1) * DAY - 1,
        columns=["SequenceNumber"]).get(f"{symbol}/1Sec/TRADE")
    return 0 if rows is None else len(rows)


def run_case(bootstrap: str, url: str, events: list[tuple[str, dict]], batch: int,
             whole_span: bool = False) -> Measured:
    config = make_config(bootstrap, url, name=f"benchlb-{uuid.uuid4().hex[:6]}", partitions=1,
                         batch_max_events=batch, batch_max_ms=200, commit_delay_ms=1500)
    ensure_topics(config)
    _publish(config, events)
    return throughput(config, len(events), whole_span=whole_span)


def report(name: str, m: Measured) -> None:
    print(f"  {name}: {m.events:,} events, {m.cpu / m.events * 1e6:.2f} µs CPU per event "
          f"(process), {m.loop_cpu / m.events * 1e6:.2f} µs in its loop thread, "
          f"{m.rate:,.0f} events/s wall, {m.rows_read:,} stored rows read by dedupe, "
          f"peak resident {m.rss_mib} MiB")


def repair_after_kill(handle: NativeServices, url: str, symbols: dict[str, str], recent: int,
                      step_ns: int) -> None:
    """Part 4: write recent rows, kill -9 MarketStore, start it, time ``repair_recent``."""
    sinks = {}
    for name, symbol in symbols.items():
        sink = MarketStoreSink(MarketStoreWriter(url, timeout_s=300))
        rows = day_rows(symbol, 13, recent, step_ns)
        bid = sink.ids.id_of(f"{symbol}/1Sec/TRADE")
        for i in range(0, recent, 50_000):  # batches of the consumer's default size
            part = rows[i:i + 50_000]
            sink.add_rows("TRADE", np.full(len(part), bid), part)
            sink.flush()
        sinks[name] = sink
    handle.kill_marketstore()
    handle.start_marketstore()
    deadline = time.monotonic() + 120
    while True:  # the restarted server answers once its WAL is replayed
        try:
            MarketStoreWriter(url).ping()
            break
        except MarketStoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    print(f"repair after a kill -9 of MarketStore ({recent:,} trades written just before):")
    times = {}
    for name, sink in sinks.items():
        sink.writer.close()
        read0, t0, w0 = sink.writer.rows_read, time.process_time(), time.perf_counter()
        sink.repair_recent()
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        times[name] = cpu
        print(f"  {name}: {cpu / recent * 1e6:.2f} µs CPU per recent event ({cpu:.2f} s, "
              f"{wall:.1f} s wall), {sink.writer.rows_read - read0:,} rows read, "
              f"{sink.repairs} bucket(s) rebuilt")
    print(f"ratio large / empty, repair CPU: "
          f"{times['large bucket'] / max(times['empty bucket'], 1e-9):.2f} (target <= 2)")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.largebucket", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stored", type=int, default=5_000_000, help="rows in the large bucket")
    ap.add_argument("--events", type=int, default=200_000, help="backfilled trades per case")
    ap.add_argument("--chunk", type=int, default=5_000,
                    help="trades of one day before the other day's (interleaving)")
    ap.add_argument("--batch", type=int, default=50_000, help="consumer.batch_max_events")
    ap.add_argument("--whole-span", action="store_true",
                    help="also a large bucket read min..max per batch (the old dedupe read)")
    ap.add_argument("--recent", type=int, default=100_000,
                    help="trades written just before the kill -9 (repair part)")
    args = ap.parse_args()
    step_ns = DAY // (args.stored // 2)  # a stored day spread over the whole day
    with bench_services() as svc:
        run_bench(args, step_ns, svc)


def run_bench(args: argparse.Namespace, step_ns: int, svc: BenchServices) -> None:
    bootstrap, url = svc.kafka_bootstrap, svc.marketstore_url
    run = uuid.uuid4().hex[:6].upper()
    large, empty = f"LB{run}", f"LE{run}"
    print(f"filling {large}/1Sec/TRADE with {args.stored:,} rows (days 10 and 12, "
          f"a trade every {step_ns / 1e6:.1f} ms)...")
    print(f"  {fill(url, large, args.stored, step_ns):.1f} s")
    handle = svc.handle if svc.started("marketstore") else None
    if handle is not None:
        # a clean stop checkpoints the WAL: the kill -9 below replays only what follows
        handle.down(["marketstore"])
        handle.up(["marketstore"])
    results = {}
    cases = [("empty bucket", empty, False), ("large bucket", large, False)]
    if args.whole_span:
        cases.append(("large bucket, min..max reads", f"LW{run}", True))
        print(f"  {fill(url, f'LW{run}', args.stored, step_ns):.1f} s (a second one)")
    for name, symbol, whole_span in cases:
        events = backfill_events(symbol, args.events, step_ns, args.chunk)
        results[name] = run_case(bootstrap, url, events, args.batch, whole_span)
        for day in (9, 11):
            got = stored_in(url, symbol, day)
            if got != args.events // 2:
                raise SystemExit(f"{symbol}: {got:,} rows on day {day}, expected "
                                 f"{args.events // 2:,}")
    print(f"backfill of days 9 and 11 ({args.events:,} trades, chunks of {args.chunk:,}, "
          f"batches of up to {args.batch:,}):")
    for name, m in results.items():
        report(name, m)
    e, big = results["empty bucket"], results["large bucket"]
    ratio = (big.cpu / big.events) / (e.cpu / e.events)
    print(f"ratio large / empty, CPU per event: {ratio:.2f} (target <= 2)")
    if handle is not None:
        repair_after_kill(handle, url, {"empty bucket": f"RE{run}", "large bucket": large},
                          args.recent, step_ns)


if __name__ == "__main__":
    main()
