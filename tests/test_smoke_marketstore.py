"""Smoke tests against a real MarketStore: fixed and variable-length buckets, append semantics.

The append test pins the behaviour the consumer's exactly-once design rests on: a
variable-length write appends (the same TRADE rows twice are stored twice), while a
fixed-length write to an existing epoch replaces that row.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import numpy as np
import pymarketstore as pymkts
import pytest

pytestmark = pytest.mark.integration

T0 = 1704205800  # 2024-01-02 14:30:00 UTC, a minute boundary
OHLCV = np.dtype([("Epoch", "i8"), ("Open", "f8"), ("High", "f8"), ("Low", "f8"),
                  ("Close", "f8"), ("Volume", "u8")])
TRADE = np.dtype([("Epoch", "i8"), ("Nanoseconds", "i4"), ("Price", "f8"), ("Size", "u8")])


@pytest.fixture
def client(marketstore_url: str) -> pymkts.Client:
    return pymkts.Client(marketstore_url)


@pytest.fixture
def symbol(client: pymkts.Client) -> Iterator[str]:
    """A symbol no other test uses; its buckets are destroyed afterwards."""
    name = "SMK" + uuid.uuid4().hex[:10].upper()
    yield name
    for bucket in (f"{name}/1Min/OHLCV", f"{name}/1Sec/TRADE"):
        with contextlib.suppress(Exception):  # a bucket the test never created
            client.destroy(bucket)


def write(client: pymkts.Client, rows: np.ndarray, bucket: str, variable: bool) -> None:
    """Write and check every item of the reply: errors come inside a successful RPC."""
    reply = client.write(rows, bucket, isvariablelength=variable)
    errors = [item["error"] for item in (reply.get("responses") or []) if item.get("error")]
    assert not errors, f"write to {bucket} failed: {errors}"


def read(client: pymkts.Client, symbol: str, timeframe: str, group: str) -> np.ndarray:
    reply = client.query(pymkts.Params(symbol, timeframe, group, start=T0 - 60, end=T0 + 3600))
    return reply.first().array


def trades() -> np.ndarray:
    # Three prints in one second (told apart only by Nanoseconds) and one in the next.
    return np.array([(T0, 1_000, 187.25, 100), (T0, 250_000, 187.26, 5),
                     (T0, 999_999_000, 187.24, 300), (T0 + 1, 42, 187.30, 1)], dtype=TRADE)


def test_ohlcv_fixed_bucket_round_trip(client: pymkts.Client, symbol: str) -> None:
    bars = np.array([(T0 + 60 * i, 10.0 + i, 11.0 + i, 9.5 + i, 10.5 + i, 1000 * (i + 1))
                     for i in range(5)], dtype=OHLCV)
    write(client, bars, f"{symbol}/1Min/OHLCV", variable=False)

    got = read(client, symbol, "1Min", "OHLCV")
    assert got.dtype.names == OHLCV.names
    assert len(got) == 5
    for name in OHLCV.names:
        np.testing.assert_array_equal(got[name], bars[name], err_msg=name)


def test_trade_variable_length_bucket_round_trip(client: pymkts.Client, symbol: str) -> None:
    sent = trades()
    write(client, sent, f"{symbol}/1Sec/TRADE", variable=True)

    got = read(client, symbol, "1Sec", "TRADE")
    assert set(got.dtype.names) == set(TRADE.names)  # the server moves Nanoseconds last
    assert len(got) == len(sent)
    got = np.sort(got, order=["Epoch", "Nanoseconds"])
    for name in TRADE.names:
        np.testing.assert_array_equal(got[name], sent[name], err_msg=name)


def test_append_behaviour_variable_appends_fixed_replaces(client: pymkts.Client,
                                                          symbol: str) -> None:
    sent = trades()
    write(client, sent, f"{symbol}/1Sec/TRADE", variable=True)
    write(client, sent, f"{symbol}/1Sec/TRADE", variable=True)
    stored = read(client, symbol, "1Sec", "TRADE")
    assert len(stored) == 2 * len(sent), "variable-length writes must append (stored twice)"
    counts = {(int(r["Epoch"]), int(r["Nanoseconds"])): 0 for r in sent}
    for row in stored:
        counts[(int(row["Epoch"]), int(row["Nanoseconds"]))] += 1
    assert set(counts.values()) == {2}

    first = np.array([(T0, 10.0, 11.0, 9.0, 10.5, 100)], dtype=OHLCV)
    second = np.array([(T0, 10.0, 12.0, 9.0, 11.5, 250)], dtype=OHLCV)
    write(client, first, f"{symbol}/1Min/OHLCV", variable=False)
    write(client, second, f"{symbol}/1Min/OHLCV", variable=False)
    bars = read(client, symbol, "1Min", "OHLCV")
    assert len(bars) == 1, "a fixed-length write to an existing epoch must replace it"
    assert (bars["High"][0], bars["Close"][0], bars["Volume"][0]) == (12.0, 11.5, 250)


def test_write_errors_arrive_inside_a_successful_reply(client: pymkts.Client,
                                                       symbol: str) -> None:
    write(client, np.array([(T0, 1.0, 1.0, 1.0, 1.0, 1)], dtype=OHLCV),
          f"{symbol}/1Min/OHLCV", variable=False)
    wrong = np.array([(T0 + 60, 1.0)], dtype=[("Epoch", "i8"), ("Open", "f4")])
    reply = client.write(wrong, f"{symbol}/1Min/OHLCV")  # no exception: the RPC succeeded
    errors = [item.get("error") for item in reply["responses"]]
    assert errors and all(errors), reply
    assert len(read(client, symbol, "1Min", "OHLCV")) == 1
