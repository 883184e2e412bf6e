"""``massive-fetcher tail`` against a real MarketStore: timeframes, formats, time range,
``--follow`` seeing a row written after it started."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pymarketstore as pymkts
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
T0 = 1704205800  # 2024-01-02 14:30:00 UTC
OHLCV = np.dtype([("Epoch", "i8"), ("Open", "f8"), ("High", "f8"), ("Low", "f8"),
                  ("Close", "f8"), ("Volume", "f8")])
TRADE = np.dtype([("Epoch", "i8"), ("Nanoseconds", "i4"), ("Price", "f8"), ("Size", "f8")])


@pytest.fixture
def client(marketstore_url: str) -> pymkts.Client:
    return pymkts.Client(marketstore_url)


@pytest.fixture
def symbol(client: pymkts.Client) -> Iterator[str]:
    name = "TL" + uuid.uuid4().hex[:10].upper()
    yield name
    for bucket in (f"{name}/5Min/OHLCV", f"{name}/1Min/OHLCV", f"{name}/1Sec/TRADE"):
        with contextlib.suppress(Exception):  # a bucket the test never created
            client.destroy(bucket)


def write(client: pymkts.Client, rows: np.ndarray, bucket: str, variable: bool) -> None:
    reply = client.write(rows, bucket, isvariablelength=variable)
    errors = [item["error"] for item in (reply.get("responses") or []) if item.get("error")]
    assert not errors, errors


def bars(*starts: int) -> np.ndarray:
    return np.array([(s, 10.0, 11.0, 9.0, 10.5, 100.0 + i) for i, s in enumerate(starts)],
                    dtype=OHLCV)


def tail(marketstore_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "massive_fetcher", "tail", *argv],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "MARKETSTORE_URL": marketstore_url})


def test_timeframe_json_and_time_range(client: pymkts.Client, marketstore_url: str,
                                       symbol: str) -> None:
    write(client, bars(T0, T0 + 300, T0 + 600, T0 + 900), f"{symbol}/5Min/OHLCV", False)
    done = tail(marketstore_url, symbol.lower(), "--timeframe", "5Min", "--types", "bars",
                "--format", "json", "--since", "2024-01-02T14:35:00Z",
                "--until", "2024-01-02T14:40")
    assert done.returncode == 0, done.stderr
    rows = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [r["Epoch"] for r in rows] == [T0 + 300, T0 + 600]
    assert rows[0]["bucket"] == f"{symbol}/5Min/OHLCV"
    assert rows[0]["time"] == "2024-01-02T14:35:00Z"
    assert rows[1]["Volume"] == 102.0


def test_csv_is_plain_for_one_type_and_limit_takes_the_latest(
        client: pymkts.Client, marketstore_url: str, symbol: str) -> None:
    write(client, bars(T0, T0 + 60, T0 + 120), f"{symbol}/1Min/OHLCV", False)
    done = tail(marketstore_url, symbol, "--types", "bars", "-o", "csv", "-n", "2")
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [int(r["Epoch"]) for r in table] == [T0 + 60, T0 + 120]
    assert set(table[0]) >= {"bucket", "time", "Open", "Close", "Volume"}


def test_nothing_stored_is_exit_1(marketstore_url: str, symbol: str) -> None:
    done = tail(marketstore_url, symbol)
    assert done.returncode == 1
    assert f"{symbol}/1Min/OHLCV: no rows" in done.stdout


def _lines(stream: io.TextIOBase, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _next_row(lines: queue.Queue[str], deadline: float) -> dict:
    remaining = deadline - time.monotonic()
    assert remaining > 0, "tail --follow printed nothing in time"
    return orjson.loads(lines.get(timeout=remaining))


def test_follow_prints_rows_written_after_it_started(
        client: pymkts.Client, marketstore_url: str, symbol: str) -> None:
    bucket = f"{symbol}/1Sec/TRADE"
    write(client, np.array([(T0, 5, 100.0, 1.0)], dtype=TRADE), bucket, True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "massive_fetcher", "tail", symbol, "--types", "trades",
         "--format", "json", "--follow", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "MARKETSTORE_URL": marketstore_url})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        first = _next_row(lines, deadline)
        assert (first["Epoch"], first["Nanoseconds"]) == (T0, 5)
        # same second, later nanosecond, then a later second: both are new
        write(client, np.array([(T0, 7, 101.0, 2.0), (T0 + 1, 0, 102.0, 3.0)], dtype=TRADE),
              bucket, True)
        new = [_next_row(lines, deadline), _next_row(lines, deadline)]
        assert [(r["Epoch"], r["Nanoseconds"], r["Price"]) for r in new] == [
            (T0, 7, 101.0), (T0 + 1, 0, 102.0)]
        assert new[0]["time"] == "2024-01-02T14:30:00.000000007Z"
        # nothing printed twice: the next row printed is the next one written
        write(client, np.array([(T0 + 2, 0, 103.0, 4.0)], dtype=TRADE), bucket, True)
        after = _next_row(lines, deadline)
        assert (after["Epoch"], after["Nanoseconds"], after["Price"]) == (T0 + 2, 0, 103.0)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=90)
    assert "Traceback" not in proc.stderr.read()
