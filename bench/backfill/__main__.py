"""``python -m bench.backfill``: REST pages to acknowledged Kafka records, per core-second.

The simulator runs as a separate process (``massive-fetcher simulator --no-live``) so it
does not share this interpreter's GIL or count in its CPU time; Kafka is
``$KAFKA_BOOTSTRAP_SERVERS``, else one started for the run (``bench.services``). For each
parallelism (1, 4, 8 by default) the same trades/quotes windows (one market day per symbol)
go through the real engine -- aiohttp client, the compiled page encoder (or, without it,
orjson + mapping + codec), Publisher -- into fresh topics, and the clock stops when Kafka
has acknowledged the last record.

The figure is records per core-second: records / the process's CPU time (every thread:
the event loop, the publishing threads, librdkafka's), the machine being shared. The
ceiling is the same records, encoded beforehand, produced by the same Publisher to the same
Kafka (fresh topics) until acknowledged, in the same run: the ratio pipeline / ceiling says
what share of the CPU the REST side costs, whatever the machine's load.

Where the time goes (per record, summed over threads): HTTP is the time requests spent
waiting for their response bodies (wall, overlapping with parallelism > 1); encode is the
compiled page encoder's CPU (parse + encode, the rest of the page included), or map +
encode on the reference path; JSON the orjson decoding of pages the compiled encoder left
to it; produce the Python produce calls; other the rest of the process's CPU (aiohttp and
the event loop, librdkafka's threads); flush the wall time waiting for acknowledgements.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from backfill.client import MassiveRestClient
from backfill.engine import BackfillEngine
from backfill.mapping import record_from_rest
from backfill.nativepages import EncodedPage, NativePages
from backfill.plan import Window, plan_windows, request_for
from bench.services import bench_services
from common.config import Config, KafkaConfig, MassiveConfig, MetricsConfig, TopicsConfig
from producer.publisher import HISTORY_PRODUCER_DEFAULTS, Publisher
from schemas.codec import make_codec
from schemas.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
KEY = "BENCHKEY"
TARGET_PER_CORE = 400_000
TARGET_RATIO = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(symbols: list[str], rate: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "massive_fetcher", "simulator", "--host", "127.0.0.1",
         "--port", str(port), "--no-live", "--symbols", *symbols,
         "--trades-per-second", str(rate), "--quotes-per-second", str(rate),
         "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("simulator did not start")


def make_config(bootstrap: str, base_url: str) -> Config:
    tag = f"bench-backfill-{uuid.uuid4().hex[:8]}"
    return Config(
        massive=MassiveConfig(api_key=KEY, base_url=base_url),
        kafka=KafkaConfig(bootstrap_servers=bootstrap, partitions=4,
                          topics=TopicsConfig(bars=f"{tag}.bars", trades=f"{tag}.trades",
                                              quotes=f"{tag}.quotes",
                                              dead_letter=f"{tag}.dlq")),
        metrics=MetricsConfig(enabled=False))


def windows_of(symbols: list[str], day: dt.date, limit: int) -> list[Window]:
    return [w for s in symbols for t in ("trades", "quotes")
            for w in plan_windows(s, t, day, day, limit=limit)]


async def one_run(config: Config, symbols: list[str], day: dt.date, parallelism: int,
                  limit: int) -> dict[str, float]:
    publisher = Publisher(config, client_id="bench-backfill",
                          defaults=HISTORY_PRODUCER_DEFAULTS)
    windows = windows_of(symbols, day, limit)
    started = time.perf_counter()
    cpu0 = time.process_time()
    async with MassiveRestClient(KEY, config.massive.base_url,
                                 concurrency=parallelism) as client:
        engine = BackfillEngine(client, publisher, make_codec(config), None,
                                parallelism=parallelism, limit=limit)
        progress = await engine.run(windows)
        remaining = await asyncio.to_thread(publisher.flush, 60)
        stats = client.stats
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    assert remaining == 0 and publisher.failed == 0
    return {"records": progress.records, "pages": progress.pages, "wall": wall, "cpu": cpu,
            "http": stats.http_s, "json": stats.json_s, "map": progress.map_s,
            "encode": progress.encode_s, "produce": progress.produce_s,
            "flush": progress.flush_s, "native": float(bool(engine.native.kinds))}


async def encoded_records(config: Config, symbols: list[str], day: dt.date,
                          limit: int) -> list[tuple[str, str, list[bytes]]]:
    """The records of the same windows, encoded (untimed): the ceiling's input."""
    codec = make_codec(config)
    pages = NativePages(codec)
    out = []
    async with MassiveRestClient(KEY, config.massive.base_url) as client:
        for w in windows_of(symbols, day, limit):
            path, params = request_for(w, limit, True)
            async for page in client.pages(path, params, pages.decoder(w.kind, w.symbol)):
                if isinstance(page, EncodedPage):
                    out.append((w.kind, w.symbol, page.records))
                else:
                    out.append((w.kind, w.symbol, [
                        codec.encode(w.kind, record_from_rest(w.kind, r, w.symbol))
                        for r in page.get("results") or []]))
    return out


def ceiling(config: Config, records: list[tuple[str, str, list[bytes]]]) -> dict[str, float]:
    """The same records produced pre-encoded by a Publisher, until acknowledged."""
    publisher = Publisher(config, client_id="bench-backfill-ceiling",
                          defaults=HISTORY_PRODUCER_DEFAULTS)
    started = time.perf_counter()
    cpu0 = time.process_time()
    for kind, symbol, values in records:
        publisher.produce_values(kind, symbol, values)
    remaining = publisher.flush(60)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    assert remaining == 0 and publisher.failed == 0
    return {"records": sum(len(v) for _, _, v in records), "wall": wall, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backfill", description=__doc__)
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.15,
                        help="simulated trades (and quotes) per second per symbol")
    parser.add_argument("--limit", type=int, default=10000, help="REST page size")
    parser.add_argument("--parallelism", default="1,4,8")
    args = parser.parse_args()
    with bench_services(marketstore=False) as svc:
        return run_bench(args, svc.kafka_bootstrap)


def run_bench(args: argparse.Namespace, bootstrap: str) -> int:
    symbols = [f"ZBENCH{i}" for i in range(args.symbols)]
    day = dt.date(2024, 1, 3)
    proc, url = start_simulator(symbols, args.rate)
    load = os.getloadavg()
    try:
        # warm the simulator's per-day caches and our imports once, untimed
        warm = make_config(bootstrap, url)
        ensure_topics(warm)
        asyncio.run(one_run(warm, symbols[:1], day, 1, args.limit))
        records = asyncio.run(encoded_records(warm, symbols, day, args.limit))
        rows = []
        for p in (int(x) for x in args.parallelism.split(",")):
            config = make_config(bootstrap, url)
            ensure_topics(config)
            rows.append((p, asyncio.run(one_run(config, symbols, day, p, args.limit))))
        ceil_config = make_config(bootstrap, url)
        ensure_topics(ceil_config)
        top = ceiling(ceil_config, records)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    load_after = os.getloadavg()
    path = "compiled page encoder" if rows[0][1]["native"] else "reference path (no build)"
    print(f"backfill bench: {len(symbols)} symbols x trades+quotes x 1 day, page size "
          f"{args.limit}, Kafka {bootstrap}, simulator in its own process; {path}; load "
          f"average {load[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} cores)")
    top_rate = top["records"] / top["cpu"]
    print(f"ceiling (pre-encoded records, same Publisher, same Kafka): {top['records']:.0f} "
          f"records, {top['cpu']:.2f} core-s -> {top_rate:,.0f} records per core-second")
    print(f"{'par':>4} {'records':>8} {'pages':>6} {'wall s':>7} {'cpu s':>6} "
          f"{'rec/core-s':>10} {'/ceil':>5} | us per record: {'http':>5} {'json':>5} "
          f"{'map':>5} {'encode':>6} {'produce':>7} {'other':>5} | {'flush s':>7}")
    for p, r in rows:
        n = r["records"]
        rate = n / r["cpu"]
        other = r["cpu"] - r["json"] - r["map"] - r["encode"] - r["produce"]
        us = {k: 1e6 * v / n for k, v in (("http", r["http"]), ("json", r["json"]),
                                          ("map", r["map"]), ("encode", r["encode"]),
                                          ("produce", r["produce"]), ("other", other))}
        print(f"{p:>4} {n:>8.0f} {r['pages']:>6.0f} {r['wall']:>7.2f} {r['cpu']:>6.2f} "
              f"{rate:>10,.0f} {rate / top_rate:>5.2f} | {'':>13} {us['http']:>5.2f} "
              f"{us['json']:>5.2f} {us['map']:>5.2f} {us['encode']:>6.2f} "
              f"{us['produce']:>7.2f} {us['other']:>5.2f} | {r['flush']:>7.2f}")
    best = max(r["records"] / r["cpu"] for _, r in rows)
    print(f"best: {best:,.0f} records per core-second (target >= {TARGET_PER_CORE:,}), "
          f"{best / top_rate:.2f} of the ceiling (target >= {TARGET_RATIO}); the ceiling "
          f"itself costs {1e6 / top_rate:.2f} us per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
