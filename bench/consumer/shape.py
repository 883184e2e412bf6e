"""``python -m bench.consumer.shape``: what MarketStore charges per second of live data, by
how many writes that second is split into (no Kafka, no consumer: prebuilt arrays only).

A live consumer appends every bucket's newest rows once per batch. MarketStore stores a
variable-length bucket's interval (one second for trades) as one record and rewrites the
whole record on each append, so K appends per second write about r*(K+1)/2 rows per bucket
for r rows. This replays the same S symbols x R trades/s for D seconds of data split into K
writes per second (fresh buckets per K) and prints, per K: the write time per call (p50,
p99), MarketStore's CPU per second of data (from /proc, the process listening on the URL's
port), and the disk growth per row.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from bench.procstat import cpu_seconds, pid_listening_on
from consumer.buckets import TRADE_DTYPE
from consumer.writer import MarketStoreWriter, build_write_requests
from tests.support.testkit import BASE_NS


def _requests(symbols: list[str], rate: int, second: int, k: int, part: int) -> list[dict]:
    """The k-th of ``k`` slices of one second of trades, every symbol's rows in one request."""
    per = rate // len(symbols)  # rows per symbol per second
    lo, hi = per * part // k, per * (part + 1) // k
    n = hi - lo
    rows = np.zeros(n * len(symbols), dtype=TRADE_DTYPE)
    ts = BASE_NS + second * 10**9 + (np.arange(lo, hi) * (10**9 // per))
    slices = {}
    for j, s in enumerate(symbols):
        seg = rows[j * n:(j + 1) * n]
        seg["SipTimestamp"] = ts + j
        seg["Epoch"] = seg["SipTimestamp"] // 10**9
        seg["Nanoseconds"] = seg["SipTimestamp"] % 10**9
        seg["SequenceNumber"] = second * per + np.arange(lo, hi)
        seg["Price"], seg["Size"] = 100.0, 100.0
        slices[f"{s}/1Sec/TRADE"] = (j * n, n)
    return build_write_requests([("TRADE", rows, slices)])


def _disk_bytes(root: str | None) -> int:
    if not root:
        return 0
    # allocated, not apparent, size: a bucket's year file is sparse
    return sum(p.stat().st_blocks * 512 for p in Path(root).rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.consumer.shape", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--rate", type=int, default=50_000, help="trades per second of data")
    ap.add_argument("--seconds", type=int, default=5, help="seconds of data per K")
    ap.add_argument("--writes", default="50,20,10,5",
                    help="K: writes per second of data, comma-separated")
    ap.add_argument("--data-dir", default=None,
                    help="MarketStore's root directory, for the disk growth (optional)")
    args = ap.parse_args()
    url = os.environ.get("MARKETSTORE_URL", "http://127.0.0.1:15993/rpc")
    pid = pid_listening_on(urlparse(url).port or 80)
    writer = MarketStoreWriter(url)
    print(f"{args.symbols} symbols x {args.rate:,} trades/s, {args.seconds} s of data per K; "
          f"load average {os.getloadavg()[0]:.1f}; MarketStore pid {pid}")
    for k in (int(x) for x in args.writes.split(",")):
        run = uuid.uuid4().hex[:6].upper()
        symbols = [f"WS{run}{i}" for i in range(args.symbols)]
        calls = [_requests(symbols, args.rate, s, k, p)
                 for s in range(args.seconds) for p in range(k)]
        disk0 = _disk_bytes(args.data_dir)
        cpu0 = cpu_seconds(f"/proc/{pid}/stat") if pid else None
        times = []
        t0 = time.perf_counter()
        for reqs in calls:
            t = time.perf_counter()
            writer.write_requests(reqs)
            times.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        cpu1 = cpu_seconds(f"/proc/{pid}/stat") if pid else None
        ms = np.array(times) * 1e3
        cpu = f"{(cpu1 - cpu0) / args.seconds:.3f} core-s" if cpu0 is not None and cpu1 else "?"
        disk = (_disk_bytes(args.data_dir) - disk0) / (args.rate * args.seconds)
        print(f"K={k:>3} writes/s: {len(calls)} writes of {args.rate // k:,} rows, "
              f"write p50 {np.percentile(ms, 50):.1f} ms p99 {np.percentile(ms, 99):.1f} ms; "
              f"MarketStore CPU per second of data {cpu}; "
              f"all writes back to back {wall / args.seconds * 1e3:.0f} ms per second of data"
              + (f"; disk {disk:.0f} B/row" if args.data_dir else ""))


if __name__ == "__main__":
    main()
