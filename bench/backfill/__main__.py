"""``python -m bench.backfill``: records/s from the simulator's REST API to acknowledged Kafka.

The simulator runs as a separate process (``massive-fetcher simulator --no-live``) so it
does not share this interpreter's GIL; Kafka is ``$KAFKA_BOOTSTRAP_SERVERS``, else one
started for the run (``bench.services``). For each parallelism (1, 4, 8 by default) the
same trades/quotes windows (one market day per symbol) go through the real engine --
aiohttp client, orjson, mapping, codec, Publisher -- into fresh topics, and the clock stops
when Kafka has acknowledged the last record.

The split: HTTP is the time requests spent waiting for their response bodies, summed over
requests (with parallelism > 1 they overlap, so it can exceed the wall time); JSON, map,
encode and produce are CPU stages, summed on whatever thread ran them; flush is the time
spent waiting for Kafka acknowledgements at checkpoints and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from backfill.client import MassiveRestClient
from backfill.engine import BackfillEngine
from backfill.plan import plan_windows
from bench.services import bench_services
from common.config import Config, KafkaConfig, MassiveConfig, MetricsConfig, TopicsConfig
from producer.publisher import Publisher
from schemas.codec import make_codec
from schemas.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
KEY = "BENCHKEY"


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


async def one_run(config: Config, symbols: list[str], day: dt.date, parallelism: int,
                  limit: int) -> dict[str, float]:
    publisher = Publisher(config, client_id="bench-backfill")
    windows = [w for s in symbols for t in ("trades", "quotes")
               for w in plan_windows(s, t, day, day, limit=limit)]
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
            "flush": progress.flush_s}


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
    try:
        # warm the simulator's per-day caches and our imports once, untimed
        warm = make_config(bootstrap, url)
        ensure_topics(warm)
        asyncio.run(one_run(warm, symbols[:1], day, 1, args.limit))
        rows = []
        for p in (int(x) for x in args.parallelism.split(",")):
            config = make_config(bootstrap, url)
            ensure_topics(config)
            rows.append((p, asyncio.run(one_run(config, symbols, day, p, args.limit))))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    base = rows[0][1]["records"] / rows[0][1]["wall"]
    print(f"backfill bench: {len(symbols)} symbols x trades+quotes x 1 day, "
          f"page size {args.limit}, Kafka {bootstrap}, simulator in its own process")
    print(f"{'par':>4} {'records':>8} {'pages':>6} {'wall s':>7} {'rec/s':>9} {'x p1':>5} "
          f"{'cpu s':>6} | {'http':>6} {'json':>6} {'map':>6} {'encode':>6} "
          f"{'produce':>7} {'flush':>6}  (seconds, summed)")
    for p, r in rows:
        rate = r["records"] / r["wall"]
        print(f"{p:>4} {r['records']:>8.0f} {r['pages']:>6.0f} {r['wall']:>7.2f} "
              f"{rate:>9,.0f} {rate / base:>5.2f} {r['cpu']:>6.2f} | {r['http']:>6.2f} "
              f"{r['json']:>6.2f} {r['map']:>6.2f} {r['encode']:>6.2f} {r['produce']:>7.2f} "
              f"{r['flush']:>6.2f}")
    for p, r in rows:
        cpu_stages = r["json"] + r["map"] + r["encode"] + r["produce"]
        print(f"p={p}: of our CPU stages json {r['json'] / cpu_stages:.0%}, map "
              f"{r['map'] / cpu_stages:.0%}, encode {r['encode'] / cpu_stages:.0%}, produce "
              f"{r['produce'] / cpu_stages:.0%}; http wait / wall {r['http'] / r['wall']:.2f}; "
              f"per record {1e6 * cpu_stages / r['records']:.1f} us CPU in stages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
