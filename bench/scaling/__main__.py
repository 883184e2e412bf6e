"""``python -m bench.scaling``: consumer throughput Kafka -> MarketStore with 1 and 2 members.

Two topic sets of the same shape (12 partitions, ``--events`` trades/quotes/bars over
``--symbols`` symbols, made by ``bench.consumer``'s generator) are pre-published before any
clock runs. Set 1 is consumed by one ``massive-fetcher consumer`` process, set 2 by two such
processes in one group. Each set has its own symbols (a second pass over the same buckets
would only find duplicates, a different amount of work). Both are fresh groups.

The clock runs from a member's first ``partitions assigned`` log line to the end of the last
batch write that brings MarketStore to every event (from the members' DEBUG ``batch written``
lines, as ``tests/test_consumer_crashes.py`` reads them), so the second member's join counts:
the broker here has ``group.initial.rebalance.delay.ms=0``, so the first member starts alone
and hands half its partitions over in a cooperative rebalance (its revocation flushes and
commits, which waits out ``commit_delay_ms``). A second figure covers only the settled group:
the rows of the batches whose write started after the last assignment change, over the time
from that change to the last write.

Ownership: a bucket is fed by exactly one topic partition (key = symbol, one topic per
attribute group), so no bucket is written by two members at once when no partition is:
checked twice, with the owned intervals from the assign/revoke log lines and with
``tests.support.testkit.ownership_violations`` over the write spans. The rows stored
are counted back from MarketStore.

The consumers share the machine's cores with Kafka and MarketStore (and this script): on
2 cores a second consumer mostly competes with the servers it feeds.

Kafka: $KAFKA_BOOTSTRAP_SERVERS, MarketStore: $MARKETSTORE_URL; whichever is unset is started
for the run (``bench.services``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.consumer.__main__ import _events, _publish
from bench.procstat import cpu_seconds
from bench.services import bench_services
from common.config import Config
from consumer.writer import MarketStoreWriter
from schemas.topics import ensure_topics
from tests.support.testkit import (
    BASE_NS,
    Span,
    consumer_process,
    expected_buckets,
    log_events,
    make_config,
    overlapping_spans,
    ownership_violations,
    stop_processes,
    write_config,
)

DAY_NS = 86_400 * 10**9


@dataclass
class Run:
    members: int
    rows: int = 0
    duplicates: int = 0
    rows_by_member: dict[str, int] = field(default_factory=dict)
    t_first_assign: float | None = None
    t_last_write: float = 0.0
    t_settled: float = 0.0  # last assignment change before the last write
    rows_settled: int = 0  # rows of batches whose write started after t_settled
    assignments: dict[str, list[str]] = field(default_factory=dict)
    cpu_s: float = 0.0  # consumer processes, from the first assignment to the end
    machine_busy: float = 0.0  # share of all cores busy over the same span
    overlaps: list[str] = field(default_factory=list)
    write_overlaps: list[str] = field(default_factory=list)
    stored: int = 0

    @property
    def seconds(self) -> float:
        return self.t_last_write - (self.t_first_assign or self.t_last_write)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def settled_rate(self) -> float:
        span = self.t_last_write - self.t_settled
        return self.rows_settled / span if span > 0 else 0.0


def _proc_cpu(pid: int) -> float:
    return cpu_seconds(f"/proc/{pid}/stat") or 0.0


def _machine_cpu() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def ownership_overlaps(logs: dict[str, Path]) -> list[str]:
    """Partitions owned by two members over overlapping intervals (assign -> revoke/lost)."""
    owned: dict[str, list[Span]] = {}
    for member, path in logs.items():
        since: dict[str, float] = {}
        for event in log_events(path, missing_ok=True):
            msg = event.get("msg")
            if msg == "partitions assigned":
                for part in event["partitions"]:
                    since[part] = event["t"]
            elif msg in ("partitions revoked", "partitions lost"):
                for part in event["partitions"]:
                    if part in since:
                        owned.setdefault(part, []).append((since.pop(part), event["t"], member))
        for part, start in since.items():  # never given up in the log: owned to the end
            owned.setdefault(part, []).append((start, float("inf"), member))
    return [f"{part}: {owner} until {end:.3f} and {member} from {start:.3f}"
            for part, owner, end, member, start in overlapping_spans(owned)]


def _scan(run: Run, logs: dict[str, Path]) -> None:
    run.rows = run.duplicates = 0
    changes: list[float] = []
    for member, path in logs.items():
        rows = 0
        assigned: set[str] = set()
        for event in log_events(path, missing_ok=True):
            msg = event.get("msg")
            if msg == "batch written":
                n = sum(event["rows"].values())
                rows += n
                run.duplicates += event["duplicates"]
                if n:
                    run.t_last_write = max(run.t_last_write, event["t_end"])
            elif msg == "partitions assigned":
                assigned |= set(event["partitions"])
                if run.t_first_assign is None or event["t"] < run.t_first_assign:
                    run.t_first_assign = event["t"]
                changes.append(event["t"])
            elif msg in ("partitions revoked", "partitions lost"):
                assigned -= set(event["partitions"])
                changes.append(event["t"])
        run.rows_by_member[member] = rows
        run.rows += rows
        run.assignments[member] = sorted(assigned)
    # the shutdown's revocations come after the last write
    run.t_settled = max((t for t in changes if t <= run.t_last_write), default=0.0)
    run.rows_settled = sum(sum(e["rows"].values()) for path in logs.values()
                           for e in log_events(path, missing_ok=True)
                           if e.get("msg") == "batch written" and e["t_start"] >= run.t_settled)


def measure(config: Config, members: int, expected: int, workdir: Path,
            timeout: float) -> Run:
    config_path = workdir / f"scaling-{members}.yml"
    write_config(config, config_path)
    logs = {f"n{members}-m{i}": workdir / f"n{members}-m{i}.log" for i in range(members)}
    run = Run(members)
    procs = {m: consumer_process(config_path, m, p) for m, p in logs.items()}
    cpu0: dict[str, float] = {}
    held: dict[str, list[str]] = {}
    busy0 = (0, 0)
    try:
        deadline = time.monotonic() + timeout
        while run.rows < expected:
            if time.monotonic() > deadline:
                raise SystemExit(f"{members} consumer(s): {run.rows:,} of {expected:,} rows "
                                 f"after {timeout:.0f} s; logs in {workdir}")
            dead = [m for m, p in procs.items() if p.poll() is not None]
            if dead:
                raise SystemExit(f"consumer {dead} exited early; logs in {workdir}")
            time.sleep(0.1)
            _scan(run, logs)
            if run.t_first_assign is not None and not cpu0:
                # startup (imports, connecting) is not part of the run
                cpu0 = {m: _proc_cpu(p.pid) for m, p in procs.items()}
                busy0 = _machine_cpu()
        held = dict(run.assignments)  # before the shutdown's revocations
        run.cpu_s = sum(_proc_cpu(p.pid) - cpu0.get(m, 0.0) for m, p in procs.items())
        busy1 = _machine_cpu()
        run.machine_busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
    finally:
        stop_processes(procs.values())
    _scan(run, logs)
    run.assignments = held
    run.overlaps = ownership_overlaps(logs)
    run.write_overlaps = ownership_violations(logs)
    return run


def _report(run: Run, expected: int) -> None:
    print(f"{run.members} consumer(s): {run.rows:,} events in {run.seconds:.2f} s = "
          f"{run.rate:,.0f} events/s; consumer CPU {run.cpu_s:.1f} s "
          f"({run.rows / max(run.cpu_s, 1e-9):,.0f} events per consumer CPU-second); "
          f"machine busy {run.machine_busy:.0%}")
    for member, rows in run.rows_by_member.items():
        held = run.assignments.get(member, [])
        by_topic = Counter(part.rsplit(":", 1)[0].rsplit(".", 1)[-1] for part in held)
        print(f"  {member}: {rows:,} rows, holds {len(held)} partitions when the last event "
              f"was written ({', '.join(f'{t} {n}' for t, n in sorted(by_topic.items()))})")
    if run.members > 1 and run.rows:
        busiest = max(run.rows_by_member.values()) / run.rows
        print(f"  busiest member wrote {busiest:.0%} of the events (even: "
              f"{1 / run.members:.0%}): the assignor balances partition counts over all "
              f"topics, not events (the bars topic holds few)")
        idle = [m for m, rows in run.rows_by_member.items() if not rows]
        if idle:
            print(f"  WARNING: {', '.join(idle)} wrote nothing (joined after the work was "
                  f"done): this is not a {run.members}-member figure; use more --events")
    if run.t_first_assign is not None:
        print(f"  group settled {run.t_settled - run.t_first_assign:.2f} s after the first "
              f"assignment; from then on: {run.rows_settled:,} events in "
              f"{run.t_last_write - run.t_settled:.2f} s = {run.settled_rate:,.0f} events/s")
    print(f"  MarketStore holds {run.stored:,} rows (expected {expected:,}); "
          f"duplicates dropped {run.duplicates:,}")
    ok = not run.overlaps and not run.write_overlaps
    print(f"  partition (hence bucket) ownership disjoint at every moment: "
          f"{'yes' if ok else 'NO'} (assign/revoke intervals: {len(run.overlaps)} overlaps, "
          f"write spans: {len(run.write_overlaps)} overlaps)")
    for line in (run.overlaps + run.write_overlaps)[:10]:
        print(f"    {line}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events per topic set")
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--batch", type=int, default=50_000, help="consumer.batch_max_events")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per run at most")
    args = ap.parse_args()
    with bench_services() as svc:
        run_bench(args, svc.kafka_bootstrap, svc.marketstore_url)


def run_bench(args: argparse.Namespace, bootstrap: str, url: str) -> None:
    run_id = uuid.uuid4().hex[:6].upper()
    sets = []
    t = time.perf_counter()
    for members in (1, 2):
        config = make_config(bootstrap, url, name=f"scale{members}-{run_id.lower()}",
                             partitions=args.partitions, batch_max_events=args.batch,
                             batch_max_ms=200, commit_delay_ms=1500)
        ensure_topics(config)
        events = _events(args.events, [f"SC{members}{run_id}{i}" for i in range(args.symbols)])
        _publish(config, events)
        sets.append((members, config, events))
    print(f"{len(sets)} topic sets of {len(sets[0][2]):,} events over {args.symbols} symbols, "
          f"{args.partitions} partitions, batch {args.batch:,}: published in "
          f"{time.perf_counter() - t:.1f} s")
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))  # kept when a run fails
    for members, config, events in sets:
        run = measure(config, members, len(events), workdir, args.timeout)
        # a time range keeps MarketStore from scanning every year file (seconds, not 20)
        stored = MarketStoreWriter(url).query(expected_buckets(events),
                                              BASE_NS - DAY_NS, BASE_NS + DAY_NS)
        run.stored = sum(len(rows) for rows in stored.values())
        _report(run, len(events))
        results.append(run)
    shutil.rmtree(workdir)
    one, two = results
    print(f"ratio 2 consumers / 1 consumer: {two.rate / one.rate:.2f} (whole run, the "
          f"join included); {two.settled_rate / one.settled_rate:.2f} (settled group)")
    print(f"note: both consumers share this machine's {os.cpu_count()} cores with Kafka and "
          f"MarketStore (and this script), so the ratio measures contention, not the "
          f"scaling a second machine would give")
    if one.overlaps or one.write_overlaps or two.overlaps or two.write_overlaps:
        raise SystemExit("ownership overlap: a partition was owned/written by two members")
    wrong = [r.members for r, (_, _, ev) in zip(results, sets, strict=True)
             if r.stored != len(ev)]
    if wrong:
        raise SystemExit(f"MarketStore does not hold exactly the events published: {wrong}")


if __name__ == "__main__":
    main()
