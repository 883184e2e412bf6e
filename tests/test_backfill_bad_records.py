"""Odd REST records in a backfill, all the way into MarketStore and the dead-letter topic.

The simulator serves its normal answers with a few results altered (``sim.alter``): a
trade without a price and a quote with a timestamp that is not a number (malformed), and
a quote without a bid (one-sided, valid). Ground truth is the simulator's unaltered
answer, fetched before, with the same alterations applied.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from backfill.checkpoint import FILE_NAME
from backfill.mapping import quote_from_rest, trade_from_rest
from backfill.plan import plan_windows
from simulator.server import SimulatorServer
from tests.support.backfillrun import KEY, full_config, run_cli
from tests.support.readback import read_dead_letters
from tests.support.testkit import (
    assert_buckets_equal,
    consume_into_marketstore,
    expected_buckets,
    read_bucket,
)
from tests.support.truth import ny_day, rest_results

pytestmark = pytest.mark.integration

DAY = "2024-03-05"


def test_bad_rest_records_are_dead_lettered_exit_1_and_the_rest_lands(
        tmp_path: Path, kafka_bootstrap: str, marketstore_url: str) -> None:
    symbol = f"ZBR{uuid.uuid4().hex[:6].upper()}"
    with SimulatorServer(symbols=[symbol], trades_per_second=0.01,
                         quotes_per_second=0.01) as sim:
        config, path = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                   [symbol], ["trades", "quotes"])
        params = {"timestamp.gte": ny_day(DAY), "timestamp.lt": ny_day("2024-03-06"),
                  "order": "asc", "limit": 50000}
        trades = rest_results(sim.url, f"/v3/trades/{symbol}", **params)
        quotes = rest_results(sim.url, f"/v3/quotes/{symbol}", **params)
        assert len(trades) > 500 and len(quotes) > 500  # more than one 500-result page
        no_price = {k: v for k, v in trades[600].items() if k != "price"}
        one_sided = {k: v for k, v in quotes[3].items() if k not in ("bid_price", "bid_size")}
        bad_time = {**quotes[700], "sip_timestamp": "yesterday"}
        sim.alter(f"/v3/trades/{symbol}", {"sequence_number": no_price["sequence_number"]},
                  omit=["price"])
        sim.alter(f"/v3/quotes/{symbol}", {"sequence_number": one_sided["sequence_number"]},
                  omit=["bid_price", "bid_size"])
        sim.alter(f"/v3/quotes/{symbol}", {"sequence_number": bad_time["sequence_number"]},
                  set_={"sip_timestamp": "yesterday"})
        args = ["-apiKey", KEY, "-baseURL", sim.url, "-trades", "-from", f"trades={DAY}",
                "-quotes", "-from", f"quotes={DAY}", "-to", DAY, "-symbols", symbol,
                "-batchSize", "500", "-config", str(path)]
        proc = run_cli(args)
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert (f"DEAD LETTERS: 2 REST result(s) could not become records; sent to "
                f"{config.kafka.topics.dead_letter}") in proc.stdout
        assert "2 fetched, 0 skipped (checkpoint), 0 failed, 2 checkpointed" in proc.stdout
        # both windows were checkpointed once their records and dead letters were acked
        state = tmp_path / "state" / "backfill" / FILE_NAME
        assert len(state.read_text().splitlines()) == 2
        rerun = run_cli(args)
        assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
        assert "0 fetched, 2 skipped (checkpoint)" in rerun.stdout

    windows = {kind: plan_windows(symbol, kind, dt.date.fromisoformat(DAY),
                                  dt.date.fromisoformat(DAY), limit=500)[0].id
               for kind in ("trades", "quotes")}
    dead = read_dead_letters(config)
    assert len(dead) == 2
    got = sorted(((m.key().decode(), json.loads(m.value()),
                   {k: v.decode() for k, v in m.headers()}) for m in dead),
                 key=lambda item: item[2]["source.kind"])
    (quote_key, quote_value, quote_headers), (trade_key, trade_value, trade_headers) = got
    assert quote_key == trade_key == symbol
    assert trade_value == no_price and quote_value == bad_time
    assert trade_headers["error.reason"] == quote_headers["error.reason"] == "mapping"
    assert trade_headers["error.class"] == "MappingError"
    assert "REST result without 'price'" in trade_headers["error"]
    assert "yesterday" in quote_headers["error"]
    assert trade_headers["source.window"] == windows["trades"]
    assert quote_headers["source.window"] == windows["quotes"]

    consume_into_marketstore(config)
    truth: list[tuple[str, dict[str, Any]]] = []
    truth += [("trade", trade_from_rest(r, symbol)) for r in trades
              if r["sequence_number"] != no_price["sequence_number"]]
    for r in quotes:
        if r["sequence_number"] == one_sided["sequence_number"]:
            r = one_sided
        if r["sequence_number"] != bad_time["sequence_number"]:
            truth.append(("quote", quote_from_rest(r, symbol)))
    expected = expected_buckets(truth)
    assert_buckets_equal(marketstore_url, expected)
    stored = read_bucket(marketstore_url, f"{symbol}/1Min/QUOTE")
    assert stored is not None and len(stored) == len(quotes) - 1
    row = stored[stored["SequenceNumber"] == one_sided["sequence_number"]]
    assert len(row) == 1 and row["BidPrice"][0] != row["BidPrice"][0]  # NaN
    assert row["AskPrice"][0] == one_sided["ask_price"] and row["BidSize"][0] == 0.0
    assert row["AskSize"][0] == one_sided["ask_size"]
