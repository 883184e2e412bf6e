"""``python -m bench.day``: a market day in miniature through the real pipeline, then a rebuild.

1. The simulator (``massive-fetcher simulator --no-live``, its own process) models
   ``--symbols`` symbols with Zipf activity (``--zipf``: the top symbol carries ~240x the
   median at 0.7 over 5,000), trades to quotes 1:10, the US session with open and close
   bursts (``simulator.day_shape``), and AM bars each minute for every symbol that traded.
   The rates are chosen so that the session holds about ``--events`` trades and quotes.
2. ``massive-fetcher producer`` subscribes ``*`` (AM, T, Q) and ``massive-fetcher consumer``
   writes to MarketStore, each as a user runs them. The bench plays the session through
   ``POST /_sim/play`` (``--window`` simulated minutes per call; minute by minute, each
   minute's T/Q then its AM) as fast as the producer reads, and waits until the consumer
   has written every event (its own metrics say so).
3. Meanwhile it samples every process (simulator, producer, Kafka, consumer, MarketStore):
   CPU from /proc, resident memory, the consumer's lag and end-to-end histogram.
4. ``massive-fetcher replay --until-caught-up --target-marketstore`` rebuilds the day into
   an empty MarketStore (started for it); every bucket's row count and a checksum of its
   rows must equal the live run's, or the bench exits 1.

Services: ``bench.services`` (the environment's, else started and stopped by pid). Disk
bytes are measured only for servers the bench started (it knows their data directories).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from bench.day.compare import bucket_names, differences, fingerprints
from bench.day.sample import (
    Sample,
    Sampler,
    dir_bytes,
    open_files,
    partition_skew,
    quantile,
    scrape,
)
from bench.services import BenchServices, bench_services, private_settings
from common.files import write_private
from services.native import NativeServices
from services.process import free_port
from simulator.model import MINUTE_NS, NS, SESSION_CLOSE_S, SESSION_OPEN_S

ROOT = Path(__file__).resolve().parents[2]
DAY_NS = 1_704_153_600 * NS  # 2024-01-02: the simulator's burst clock starts that day
OPEN_NS = DAY_NS + SESSION_OPEN_S * NS
CLOSE_NS = DAY_NS + SESSION_CLOSE_S * NS
SESSION_S = SESSION_CLOSE_S - SESSION_OPEN_S
API_KEY = "bench-day-key"


@dataclass
class Run:
    name: str
    config_path: Path
    symbols: list[str]
    topics_prefix: str
    sim_url: str
    consumer_metrics: str
    workdir: Path


def write_config(svc: BenchServices, args: argparse.Namespace, workdir: Path) -> Run:
    run = uuid.uuid4().hex[:5].upper()
    symbols = [f"D{run}{i:05d}" for i in range(args.symbols)]
    per_symbol = args.events / args.symbols / SESSION_S  # trades + quotes per second
    sim_port, metrics_port = free_port(), free_port()
    name = f"day-{run.lower()}"
    path = workdir / "day.yml"
    write_private(path, yaml.safe_dump({
        "massive": {"api_key": API_KEY, "ws_server": f"ws://127.0.0.1:{sim_port}",
                    "base_url": f"http://127.0.0.1:{sim_port}", "symbols": ["*"],
                    "data_types": ["bars", "trades", "quotes"]},
        "kafka": {"bootstrap_servers": svc.kafka_bootstrap, "partitions": args.partitions,
                  "topics": {"bars": f"{name}.bars", "trades": f"{name}.trades",
                             "quotes": f"{name}.quotes",
                             "dead_letter": f"{name}.dead-letter"}},
        "marketstore": {"url": svc.marketstore_url},
        "consumer": {"group_id": f"{name}-group"},
        "producer": {"gaps_file": str(workdir / "gaps.jsonl"), "gap_repair": False},
        "metrics": {"producer_port": 0, "consumer_port": metrics_port},
        "simulator": {"port": sim_port, "symbols": symbols, "zipf": args.zipf,
                      "day_shape": True, "trades_per_second": per_symbol / 11,
                      "quotes_per_second": per_symbol * 10 / 11,
                      "slow_consumer_bytes": 256 * 1024 * 1024},
    }, sort_keys=False))
    return Run(name, path, symbols, name, f"http://127.0.0.1:{sim_port}",
               f"http://127.0.0.1:{metrics_port}/metrics", workdir)


def cli(run: Run, *argv: str, log: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASSIVE_API_KEY", "MASSIVE_WS_SERVER", "MASSIVE_FETCHER_CONFIG")}
    with (run.workdir / log).open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "massive_fetcher", *argv,
                                 "--config", str(run.config_path)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def get(url: str, timeout: float = 5) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return orjson.loads(resp.read())


def answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bool(resp.status == 200)


def post(url: str, body: dict[str, object], timeout: float = 900) -> dict[str, object]:
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return orjson.loads(resp.read())  # type: ignore[no-any-return]


def wait(what: str, check: object, timeout_s: float, procs: list[subprocess.Popen[bytes]],
         run: Run) -> None:
    """Polls ``check()`` until true; a process that died or the deadline ends the bench."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"bench.day: {proc.args[3]} exited with {proc.returncode} "
                                 f"while waiting for {what}; logs in {run.workdir}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.day: no {what} within {timeout_s:.0f} s; logs in "
                             f"{run.workdir}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def play_day(run: Run, window_min: int) -> tuple[int, int, float]:
    """Plays the session; returns (trades + quotes, bars, wall seconds)."""
    events = bars = 0
    t0 = time.monotonic()
    cursor = OPEN_NS
    while cursor < CLOSE_NS:
        seconds = min(window_min * 60, (CLOSE_NS - cursor) // NS)
        r = post(f"{run.sim_url}/_sim/play", {"seconds": seconds, "start_ns": cursor})
        events += int(r["events"])  # type: ignore[call-overload]
        bars += int(r["bars"])  # type: ignore[call-overload]
        cursor = int(r["end_ns"])  # type: ignore[call-overload]
        minute = (cursor - OPEN_NS) // MINUTE_NS
        print(f"  played {minute:>3}/{SESSION_S // 60} simulated minutes: {events:,} "
              f"T/Q and {bars:,} AM sent in {time.monotonic() - t0:.0f} s", flush=True)
    return events, bars, time.monotonic() - t0


def per_event_cost(samples: list[Sample], lo: float, hi: float, names: list[str]
                   ) -> float | None:
    """CPU seconds of ``names`` per event written between the first samples at or past
    ``lo`` and ``hi`` events."""
    def first_at(n: float) -> Sample | None:
        return next((s for s in samples if s.consumer and s.consumer.written >= n), None)
    a, b = first_at(lo), first_at(hi)
    if a is None or b is None or b is a or a.consumer is None or b.consumer is None:
        return None
    cpu = sum((b.cpu[n] or 0) - (a.cpu[n] or 0) for n in names)
    return cpu / max(1.0, b.consumer.written - a.consumer.written)


def report_minutes(samples: list[Sample], t0: float) -> None:
    print("per minute of the run: events/s written, consumer lag (end of minute), "
          "end-to-end p50 / p99 (from the consumer's histogram, interpolated)")
    rows = [s for s in samples if s.consumer is not None]
    minute, prev = 0, rows[0] if rows else None
    while prev is not None:
        end = next((s for s in rows if s.t - t0 >= (minute + 1) * 60), None)
        last = end or rows[-1]
        assert prev.consumer is not None and last.consumer is not None
        if last is prev:
            break
        deltas = {le: last.consumer.e2e.get(le, 0) - prev.consumer.e2e.get(le, 0)
                  for le in last.consumer.e2e}
        p50, p99 = quantile(0.5, deltas), quantile(0.99, deltas)
        rate = (last.consumer.written - prev.consumer.written) / max(1e-9, last.t - prev.t)
        fmt = lambda v: "-" if v is None else f"{v * 1000:,.0f} ms"  # noqa: E731
        print(f"  min {minute + 1:>3}: {rate:>9,.0f} ev/s  lag {last.consumer.lag:>10,.0f}  "
              f"p50 {fmt(p50):>9}  p99 {fmt(p99):>9}")
        if end is None:
            break
        prev, minute = end, minute + 1


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.day", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000,
                    help="trades + quotes in the session (AM bars come on top)")
    ap.add_argument("--symbols", type=int, default=5000)
    ap.add_argument("--zipf", type=float, default=0.7)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--window", type=int, default=30,
                    help="simulated minutes per play request (memory of the simulator)")
    ap.add_argument("--no-rebuild", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per stage at most")
    args = ap.parse_args()
    if args.events < 1 or args.symbols < 1 or args.window < 1:
        ap.error("--events, --symbols and --window must be >= 1")
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[:3]} on {os.cpu_count()} cores")
    with bench_services() as svc:
        return run_day(args, svc)


def run_day(args: argparse.Namespace, svc: BenchServices) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-day-"))
    run = write_config(svc, args, workdir)
    print(f"{args.symbols:,} symbols, zipf {args.zipf}, ~{args.events:,} trades+quotes in "
          f"the session; topics {run.name}.*; work dir {workdir}", flush=True)
    sim = cli(run, "simulator", "--no-live", log="simulator.log")
    procs = [sim]
    try:
        wait("simulator", lambda: answers(f"{run.sim_url}/healthz"), 120, procs, run)
        consumer = cli(run, "consumer", log="consumer.log")
        producer = cli(run, "producer", log="producer.log")
        procs += [consumer, producer]
        wait("producer subscription", lambda: any(
            c["authed"] and c.get("subscriptions") for c in get(  # type: ignore[attr-defined]
                f"{run.sim_url}/_sim/connections")), 120, procs, run)
        wait("consumer metrics", lambda: scrape(run.consumer_metrics) is not None, 120,
             procs, run)
        time.sleep(5)  # the group join: partitions assigned before data flows
        pids = {"simulator": sim.pid, "producer": producer.pid, "consumer": consumer.pid}
        if svc.handle is not None and svc.started("kafka"):
            pids["kafka"] = svc.handle.kafka.pid() or 0
        if svc.handle is not None and svc.started("marketstore"):
            pids["marketstore"] = svc.handle.marketstore.pid() or 0
        go_metrics = (svc.marketstore_url.removesuffix("/rpc") + "/metrics"
                      if "marketstore" in pids else None)
        sampler = Sampler(pids, run.consumer_metrics, go_metrics_url=go_metrics)
        first = sampler.take()
        sampler.start()
        t0 = time.monotonic()
        fds_peak = [0]
        events, bars, play_s = play_day(run, args.window)
        total = events + bars
        print(f"the simulator sent {events:,} T/Q + {bars:,} AM in {play_s:.0f} s; waiting "
              "for the consumer to write them all", flush=True)

        def written_all() -> bool:
            if "marketstore" in pids:
                fds_peak[0] = max(fds_peak[0], open_files(pids["marketstore"]) or 0)
            view = sampler.samples[-1].consumer if sampler.samples else None
            return view is not None and view.written >= total
        wait("complete write", written_all, args.timeout, procs, run)
        last = sampler.stop()
        wall = last.t - t0
        report(args, run, svc, sampler.samples, first, last, total, wall, pids, fds_peak[0])
        print(f"producer exit {stop(producer)}, consumer exit {stop(consumer)}")
        procs.remove(producer)
        procs.remove(consumer)
        if not args.no_rebuild:
            return rebuild(run, svc, total, wall, args.timeout)
        return 0
    finally:
        for proc in procs:
            stop(proc)


def report(args: argparse.Namespace, run: Run, svc: BenchServices, samples: list[Sample],
           first: Sample, last: Sample, total: int, wall: float, pids: dict[str, int],
           fds_peak: int) -> None:
    assert last.consumer is not None and first.consumer is not None
    written = last.consumer.written - first.consumer.written
    print(f"\nsustained: {written:,.0f} events in {wall:.1f} s = {written / wall:,.0f} "
          f"events/s (first play request to the consumer's last write)")
    print("CPU per event (all threads of each process, over the run):")
    for name in pids:
        a, b = first.cpu.get(name), last.cpu.get(name)
        if a is not None and b is not None:
            print(f"  {name:<12} {(b - a) / written * 1e6:7.2f} µs")
    pipeline = [n for n in pids if n != "simulator"]
    cost_first = per_event_cost(samples, 0, 0.1 * total, pipeline)
    cost_last = per_event_cost(samples, 0.9 * total, total, pipeline)
    if cost_first and cost_last:
        print(f"pipeline CPU per event, first 10% {cost_first * 1e6:.2f} µs, last 10% "
              f"{cost_last * 1e6:.2f} µs: ratio first/last {cost_first / cost_last:.2f} "
              "(target >= 0.9)")
    warm = next((s for s in samples if s.consumer and s.consumer.written >= 0.1 * total), first)
    half = next((s for s in samples if s.consumer and s.consumer.written >= 0.5 * total), last)
    print("resident memory (MiB) at start / after warm-up (10% of events) / half-way / end "
          "(target: growth after warm-up <= 10%):")
    for name in pids:
        r0, rw, rh, r1 = (first.rss.get(name), warm.rss.get(name), half.rss.get(name),
                          last.rss.get(name))
        if r0 and rw and rh and r1:
            print(f"  {name:<12} {r0:7.0f} / {rw:7.0f} / {rh:7.0f} / {r1:7.0f}  "
                  f"({(r1 / rw - 1) * 100:+.0f}% after warm-up, {(r1 / rh - 1) * 100:+.0f}% "
                  "in the second half)")
    goals = [s.go_heap_goal for s in (first, warm, half, last)]
    if all(goals):
        print(f"  marketstore Go heap goal (twice what was live at its last collection): "
              f"{' / '.join(f'{g:.0f}' for g in goals if g)}")
    lags = [f"{s.consumer.lag:,.0f}" for s in (warm, half, last) if s.consumer]
    print(f"  consumer lag then: {' / '.join(lags)} events (librdkafka pre-fetches up to "
          "queued.max.messages.kbytes of a lag into the consumer's memory)")
    skews = [(kind, partition_skew(svc.kafka_bootstrap, f"{run.topics_prefix}.{kind}"))
             for kind in ("trades", "quotes", "bars")]
    print(f"partition skew ({args.partitions} partitions, keyed by symbol), the fullest "
          "partition over the mean: " + ", ".join(
              f"{kind} {skew[1]:.2f} ({skew[0]:,} records)" for kind, skew in skews if skew))
    if svc.handle is not None and svc.started("kafka"):
        kb = dir_bytes(svc.handle.kafka.data_dir, (run.topics_prefix,))
        print(f"Kafka disk: {kb / 2**20:,.0f} MiB, {kb / total:.1f} bytes per event")
    if svc.handle is not None and svc.started("marketstore"):
        mb = dir_bytes(svc.handle.marketstore.data_dir, (run.symbols[0][:6],))
        print(f"MarketStore disk: {mb / 2**20:,.0f} MiB, {mb / total:.1f} bytes per event "
              f"({3 * len(run.symbols):,} buckets at most)")
        print(f"MarketStore open files: {open_files(pids['marketstore'])} at the end, "
              f"{fds_peak} at most while draining")
    report_minutes(samples, first.t)


def rebuild(run: Run, svc: BenchServices, total: int, live_wall: float, timeout: float) -> int:
    state = Path(tempfile.mkdtemp(prefix="bench-day-rebuild-"))
    target = NativeServices(private_settings(state), die_with_parent=True)
    target.up(["marketstore"], report=lambda line: print("  " + line, flush=True))
    try:
        t = time.monotonic()
        replay = cli(run, "replay", "--until-caught-up", "--target-marketstore",
                     target.marketstore_url, "--metrics-port", "0", log="replay.log")
        _, status, usage = os.wait4(replay.pid, 0)
        replay.returncode = os.waitstatus_to_exitcode(status)
        took = time.monotonic() - t
        if replay.returncode != 0:
            raise SystemExit(f"bench.day: replay exited {replay.returncode}; log in "
                             f"{run.workdir}/replay.log")
        cpu = usage.ru_utime + usage.ru_stime
        print(f"\nrebuild: {total:,} events replayed into an empty MarketStore in {took:.1f} s "
              f"= {total / took:,.0f} events/s (live: {total / live_wall:,.0f}); replay "
              f"process CPU {cpu / total * 1e6:.2f} µs per event")
        tbks = bucket_names(run.symbols)
        t = time.monotonic()
        live = fingerprints(svc.marketstore_url, tbks, DAY_NS, DAY_NS + 86_400 * NS)
        rebuilt = fingerprints(target.marketstore_url, tbks, DAY_NS, DAY_NS + 86_400 * NS)
        diff = differences(live, rebuilt)
        rows = sum(n for n, _ in live.values())
        print(f"compared {len(live):,} buckets ({rows:,} rows) in "
              f"{time.monotonic() - t:.0f} s: {len(diff)} differ")
        if diff or rows != total:
            for line in diff[:20]:
                print("  " + line)
            if rows != total:
                print(f"  the live run stored {rows:,} rows for {total:,} events sent")
            print("bench.day: FAILED: the rebuild does not equal the live run")
            return 1
        print("every bucket's row count and checksum equal the live run's")
        return 0
    finally:
        target.down(["marketstore"])
        shutil.rmtree(state, ignore_errors=True)  # gigabytes after a large day


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the finally blocks stopped what the bench started
        print("bench.day: interrupted", file=sys.stderr)
        sys.exit(130)
