"""Backfill against the simulator's REST API and the real Kafka.

Each test uses its own topics (uuid suffix) and its own state dir; Kafka contents are
read back from the beginning of the topics up to their high watermarks and compared
with the simulator's REST answers fetched directly (one big page, plain urllib).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from backfill.checkpoint import FILE_NAME
from backfill.mapping import bar_from_rest, quote_from_rest, trade_from_rest
from backfill.plan import day_start_ns
from common.config import Config, load_config
from schemas.codec import make_codec
from simulator.server import SimulatorServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
KEY = "BFKEY" + uuid.uuid4().hex[:12]  # unique, so finding it in output means a leak
UTC_DAY_NS = 86_400 * 1_000_000_000


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    # sparse data keeps every day small: ~864 trades and ~864 quotes per symbol and day
    with SimulatorServer(symbols=["AAPL", "MSFT", "ZBFA1", "ZBFA2", "ZBFB1"],
                         trades_per_second=0.01, quotes_per_second=0.01) as server:
        yield server


def write_config(tmp_path: Path, kafka_bootstrap: str, base_url: str,
                 **massive: Any) -> tuple[Config, Path]:
    tag = f"bf-{uuid.uuid4().hex[:10]}"
    raw = {
        "massive": {"api_key": KEY, "base_url": base_url, **massive},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 2,
                  "topics": {"bars": f"{tag}.bars", "trades": f"{tag}.trades",
                             "quotes": f"{tag}.quotes", "dead_letter": f"{tag}.dlq"}},
        "metrics": {"enabled": False},
        "services": {"state_dir": str(tmp_path / "state")},
        "producer": {"gaps_file": str(tmp_path / "gaps.jsonl")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, env={}), path


def read_topics(config: Config, kinds: tuple[str, ...] = ("bar", "trade", "quote")
                ) -> dict[str, list[dict[str, Any]]]:
    """Every record on the config's topics, from offset 0 to the high watermarks."""
    codec = make_codec(config)
    topics = {"bar": config.kafka.topics.bars, "trade": config.kafka.topics.trades,
              "quote": config.kafka.topics.quotes}
    consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                         "group.id": f"bf-test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        assignment, ends = [], {}
        for kind in kinds:
            meta = consumer.list_topics(topics[kind], timeout=10).topics[topics[kind]]
            if meta.error is not None:
                continue
            for p in meta.partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topics[kind], p),
                                                        timeout=10)
                if hi > lo:
                    assignment.append(TopicPartition(topics[kind], p, OFFSET_BEGINNING))
                    ends[(topics[kind], p)] = hi
        if not assignment:
            return out
        consumer.assign(assignment)
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(10000, timeout=1.0):
                if msg.error():
                    continue
                kind, record = codec.decode(msg.value())
                assert msg.key() == record["symbol"].encode()
                out[kind].append(record)
                tp = (msg.topic(), msg.partition())
                if tp in ends and msg.offset() + 1 >= ends[tp]:
                    del ends[tp]
        assert not ends, f"could not read to the end of {ends}"
    finally:
        consumer.close()
    return out


def rest_results(base_url: str, path: str, **params: Any) -> list[dict[str, Any]]:
    """The simulator's answer in one page (small windows only)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = urllib.request.Request(f"{base_url}{path}?{query}",
                                     headers={"Authorization": f"Bearer {KEY}"})
    for _ in range(20):
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                body = orjson.loads(resp.read())
            break
        except urllib.error.HTTPError as exc:  # a rate-limited simulator
            if exc.code != 429:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    assert "next_url" not in body, "truth must fit one page"
    return body.get("results") or []


def truth_trades(base_url: str, kind: str, symbol: str, lo: int, hi: int
                 ) -> list[dict[str, Any]]:
    results = rest_results(base_url, f"/v3/{kind}s/{symbol}", **{
        "timestamp.gte": lo, "timestamp.lt": hi, "order": "asc", "limit": 50000})
    mapper = trade_from_rest if kind == "trade" else quote_from_rest
    return [mapper(r, symbol) for r in results]


def truth_bars(base_url: str, symbol: str, multiplier: int, timespan: str, timeframe: str,
               lo: str, hi: str, adjusted: bool = True) -> list[dict[str, Any]]:
    results = rest_results(base_url, f"/v2/aggs/ticker/{symbol}/range/{multiplier}/"
                           f"{timespan}/{lo}/{hi}", limit=50000,
                           adjusted=str(adjusted).lower())
    return [bar_from_rest(r, symbol, timeframe) for r in results]


def key_of(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in record.items()))


def as_set(records: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {key_of(r) for r in records}


def cli_command() -> list[str]:
    """The installed console script (what users run), else the module."""
    script = Path(sys.executable).parent / "massive-fetcher"
    return [str(script)] if script.exists() else [sys.executable, "-m", "massive_fetcher"]


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), "backfill", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ny_day(day: str) -> int:
    return day_start_ns(dt.date.fromisoformat(day))


# -- the seed's two example invocations --------------------------------------------------

def test_seed_bars_invocation_publishes_rest_truth(sim: SimulatorServer, tmp_path: Path,
                                                   kafka_bootstrap: str) -> None:
    config, path = write_config(tmp_path, kafka_bootstrap, sim.url)
    proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-bars", "-barFrequencies",
                    "1Min,1D", "-from", "1Min=2024-01-02", "-from", "1D=2023-01-01",
                    "-to", "2024-01-03", "-symbols", "AAPL", "-config", str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert KEY not in proc.stdout + proc.stderr
    assert "backfill summary" in proc.stdout
    got = read_topics(config, ("bar",))["bar"]
    minute = truth_bars(sim.url, "AAPL", 1, "minute", "1Min", "2024-01-02", "2024-01-03")
    daily = truth_bars(sim.url, "AAPL", 1, "day", "1D", "2023-01-01", "2024-01-03")
    assert len(minute) > 1000 and len(daily) > 300
    assert len(got) == len(minute) + len(daily)  # nothing twice, nothing missing
    assert as_set(got) == as_set(minute) | as_set(daily)
    one = min((r for r in got if r["timeframe"] == "1Min"), key=lambda r: r["start_ns"])
    assert one["start_ns"] % 60_000_000_000 == 0 and one["source"] == "backfill"
    assert one["end_ns"] - one["start_ns"] == 60_000_000_000
    first_day = min((r for r in got if r["timeframe"] == "1D"), key=lambda r: r["start_ns"])
    # the simulator's days are UTC days; the bar ends at the next day boundary
    assert first_day["end_ns"] - first_day["start_ns"] == UTC_DAY_NS


def test_seed_trades_invocation_publishes_rest_truth(sim: SimulatorServer, tmp_path: Path,
                                                     kafka_bootstrap: str) -> None:
    config, path = write_config(tmp_path, kafka_bootstrap, sim.url)
    proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-trades", "-from",
                    "trades=2024-01-02", "-to", "2024-01-02", "-symbols", "AAPL,MSFT",
                    "-config", str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert KEY not in proc.stdout + proc.stderr
    got = read_topics(config, ("trade",))["trade"]
    lo, hi = ny_day("2024-01-02"), ny_day("2024-01-03")
    want = truth_trades(sim.url, "trade", "AAPL", lo, hi) + truth_trades(
        sim.url, "trade", "MSFT", lo, hi)
    assert len(want) > 1000
    assert len(got) == len(want)
    assert as_set(got) == as_set(want)
    # REST nanoseconds are kept as they are, not rounded through milliseconds
    assert any(r["sip_timestamp_ns"] % 1_000_000 for r in got)
    assert {r["symbol"] for r in got} == {"AAPL", "MSFT"}


# -- paging, 429 storms, injected 5xx, no key in output -------------------------------------

def test_many_pages_through_429_storm_and_injected_5xx(tmp_path: Path,
                                                       kafka_bootstrap: str) -> None:
    with SimulatorServer(symbols=["ZBFP1"], trades_per_second=0.01, quotes_per_second=0.01,
                         rest_requests_per_second=8.0) as sim:
        config, path = write_config(tmp_path, kafka_bootstrap, sim.url)
        sim.inject(503, count=2, path="/v3/quotes/")
        sim.inject(502, count=1, path="/v3/trades/")
        sim.inject(500, count=1)
        proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-trades", "-quotes",
                        "-from", "trades=2024-01-02", "-from", "quotes=2024-01-02",
                        "-to", "2024-01-02", "-symbols", "ZBFP1", "-batchSize", "40",
                        "-parallelism", "4", "-config", str(path)])
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = proc.stdout + proc.stderr
        assert KEY not in out
        assert "retrying" in proc.stderr and "HTTP 429" in proc.stderr
        assert "HTTP 503" in proc.stderr
        summary = proc.stdout
        pages = int(summary.split("pages", 1)[1].split()[0])
        assert pages >= 40  # ~864 records per kind at 40 per page
        got = read_topics(config, ("trade", "quote"))
        lo, hi = ny_day("2024-01-02"), ny_day("2024-01-03")
        for kind in ("trade", "quote"):
            want = truth_trades(sim.url, kind, "ZBFP1", lo, hi)
            assert len(got[kind]) == len(want) and as_set(got[kind]) == as_set(want), kind


# -- kill -9 and resume ----------------------------------------------------------------------

def test_kill_9_then_rerun_skips_done_windows_and_completes(sim: SimulatorServer,
                                                            tmp_path: Path,
                                                            kafka_bootstrap: str) -> None:
    config, path = write_config(tmp_path, kafka_bootstrap, sim.url)
    args = ["-apiKey", KEY, "-baseURL", sim.url, "-trades", "-from", "trades=2024-02-01",
            "-to", "2024-02-06", "-symbols", "ZBFA1,ZBFB1", "-batchSize", "100",
            "-parallelism", "1", "-config", str(path)]
    checkpoint = tmp_path / "state" / "backfill" / FILE_NAME
    proc = subprocess.Popen([*cli_command(), "backfill", *args,
                             "--rate", "6"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists() and checkpoint.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "finished before it could be killed; slow it down"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    done_before = checkpoint.read_bytes().count(b"\n")
    assert 2 <= done_before < 12
    rerun = run_cli(args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    skipped = int(rerun.stdout.split("fetched, ", 1)[1].split()[0])
    assert skipped >= done_before - 1  # a torn last line may be redone
    assert skipped < 12
    got = read_topics(config, ("trade",))["trade"]
    want: list[dict[str, Any]] = []
    for symbol in ("ZBFA1", "ZBFB1"):
        want += truth_trades(sim.url, "trade", symbol, ny_day("2024-02-01"),
                             ny_day("2024-02-07"))
    assert as_set(got) == as_set(want)  # complete: every record at least once
    assert len(got) < 2 * len(want)  # and the done windows were not fetched again


# -- symbols -----------------------------------------------------------------------------

def test_glob_resolves_through_reference_tickers(sim: SimulatorServer, tmp_path: Path,
                                                 kafka_bootstrap: str) -> None:
    config, path = write_config(tmp_path, kafka_bootstrap, sim.url)
    proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-bars", "-barFrequencies", "1D",
                    "-from", "1D=2024-01-01", "-to", "2024-01-10", "-symbols", "ZBFA*",
                    "-config", str(path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = read_topics(config, ("bar",))["bar"]
    assert {r["symbol"] for r in got} == {"ZBFA1", "ZBFA2"}
    for symbol in ("ZBFA1", "ZBFA2"):
        want = truth_bars(sim.url, symbol, 1, "day", "1D", "2024-01-01", "2024-01-10")
        assert as_set([r for r in got if r["symbol"] == symbol]) == as_set(want)


def test_adjusted_flag_reaches_the_api(sim: SimulatorServer, kafka_bootstrap: str,
                                       tmp_path: Path) -> None:
    from backfill.client import MassiveRestClient
    from backfill.engine import BackfillEngine
    from backfill.plan import plan_windows
    from producer.publisher import Publisher
    from schemas.topics import ensure_topics

    config, _ = write_config(tmp_path, kafka_bootstrap, sim.url)
    ensure_topics(config)
    seen: list[tuple[str, Any]] = []

    class Recording(MassiveRestClient):
        async def get_json(self, path: str, params: Any = None) -> dict[str, Any]:
            page = await super().get_json(path, params)
            seen.append((path + "?" + "&".join(f"{k}={v}" for k, v in (params or {}).items()),
                         page.get("adjusted")))
            return page

    async def run(adjusted: bool) -> int:
        publisher = Publisher(config, client_id="bf-test")
        async with Recording(KEY, sim.url) as client:
            engine = BackfillEngine(client, publisher, make_codec(config), None,
                                    adjusted=adjusted, limit=500)
            windows = plan_windows("MSFT", "bars", dt.date(2024, 1, 2), dt.date(2024, 1, 2),
                                   "1Min", limit=500)
            progress = await engine.run(windows)
        assert publisher.close(30) == 0
        return progress.records

    assert asyncio.run(run(False)) > 0
    assert seen and all(answer is False for _, answer in seen)
    assert "adjusted=false" in seen[0][0]
    seen.clear()
    asyncio.run(run(True))
    assert seen and all(answer is True for _, answer in seen)
    assert "adjusted=true" in seen[0][0]
    # the later pages come from next_url (a cursor) and still answer for the same flag
    assert len(seen) > 1 and "cursor=" in seen[1][0]


def test_bad_key_is_one_line_and_exit_1(tmp_path: Path, kafka_bootstrap: str) -> None:
    with SimulatorServer(symbols=["ZBFK1"], api_keys=["GOODKEY123"],
                         trades_per_second=0.01, quotes_per_second=0.01) as sim:
        _config, path = write_config(tmp_path, kafka_bootstrap, sim.url)
        proc = run_cli(["-apiKey", KEY, "-baseURL", sim.url, "-trades", "-from",
                        "trades=2024-01-02", "-to", "2024-01-02", "-symbols", "ZBFK1",
                        "-config", str(path)])
    assert proc.returncode == 1
    assert KEY not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("massive-fetcher")]
    assert len(errors) == 1 and "401" in errors[0] and "bad API key" in errors[0]
