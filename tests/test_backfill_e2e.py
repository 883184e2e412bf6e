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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.checkpoint import FILE_NAME
from schemas.codec import make_codec
from simulator.server import SimulatorServer
from tests.support.backfillrun import KEY, cli_command, run_cli, write_config
from tests.support.readback import read_topics
from tests.support.truth import as_set, ny_day, truth_bars, truth_trades
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
UTC_DAY_NS = 86_400 * 1_000_000_000


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    # sparse data keeps every day small: ~864 trades and ~864 quotes per symbol and day
    with SimulatorServer(symbols=["AAPL", "MSFT", "ZBFA1", "ZBFA2", "ZBFB1"],
                         trades_per_second=0.01, quotes_per_second=0.01) as server:
        yield server


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
        wait_for(lambda: proc.poll() is not None or (
                     checkpoint.exists() and checkpoint.read_bytes().count(b"\n") >= 2),
                 60, "two windows checkpointed", interval_s=0.05)
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
        async def get_json(self, path: str, params: Any = None,
                           decode: Any = None) -> dict[str, Any]:
            page = await super().get_json(path, params, decode)
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
