"""The simulator's market day in miniature: Zipf activity, the session's shape, and ``play``."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
import websockets

from simulator.model import MINUTE_NS, NS, SESSION_CLOSE_S, SESSION_OPEN_S, MarketModel
from simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(120)

DAY_NS = 1_704_153_600 * NS  # 2024-01-02, the burst clock's day
OPEN_NS = DAY_NS + SESSION_OPEN_S * NS
CLOSE_NS = DAY_NS + SESSION_CLOSE_S * NS


def test_zipf_top_symbol_is_100x_the_median_and_the_mean_stays_the_rate() -> None:
    syms = [f"Z{i}" for i in range(5000)]
    m = MarketModel(1, 1, 10, syms, zipf=0.7)
    weights = np.array([m.weight(s) for s in syms])
    assert weights[0] / np.median(weights) >= 100
    assert weights.mean() == pytest.approx(1.0)
    assert m.weight("NOT-IN-UNIVERSE") == 1.0
    assert MarketModel(1, 1, 10, syms).weight(syms[0]) == 1.0  # off by default


def test_day_shape_trades_only_in_the_session_with_open_and_close_bursts() -> None:
    m = MarketModel(2, 2, 20, ["AAA"], day_shape=True)
    assert len(m.trades("AAA", DAY_NS, OPEN_NS)) == 0
    assert len(m.quotes("AAA", CLOSE_NS, DAY_NS + 86_400 * NS)) == 0

    def per_minute(t0: int) -> int:
        t, q = m.trades_and_quotes("AAA", t0, t0 + MINUTE_NS)
        return len(t) + len(q)

    first, mid = per_minute(OPEN_NS), per_minute(OPEN_NS + 3 * 3600 * NS)
    last = per_minute(CLOSE_NS - MINUTE_NS)
    assert first > 2.5 * mid and last > 2 * mid
    session = m.trades("AAA", OPEN_NS, CLOSE_NS)
    quotes = m.quotes("AAA", OPEN_NS, CLOSE_NS)
    seconds = SESSION_CLOSE_S - SESSION_OPEN_S
    assert len(session) / seconds == pytest.approx(2, rel=0.05)  # the mean is the rate
    assert len(quotes) / len(session) == pytest.approx(10, rel=0.05)


def test_prime_day_gives_the_bars_day_minutes_computes() -> None:
    args = dict(seed=3, trades_per_second=0.5, quotes_per_second=5, symbols=["P1", "P2"],
                zipf=0.5, day_shape=True)
    primed, fresh = MarketModel(**args), MarketModel(**args)  # type: ignore[arg-type]
    for k in range(3):
        start = OPEN_NS + k * 5 * MINUTE_NS
        end = start + 5 * MINUTE_NS
        primed.prime_day("P1", start, end, primed.trades("P1", start, end))
    for minute in range(OPEN_NS, OPEN_NS + 15 * MINUTE_NS, MINUTE_NS):
        assert primed.minute_bar("P1", minute) == fresh.minute_bar("P1", minute)


async def _read_while(ws: Any, play: asyncio.Task[dict[str, Any]], deadline_s: float
                      ) -> list[dict[str, Any]]:
    """Reads while ``play`` runs (it returns once the transport took every frame), then
    until all it sent has arrived."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    while not play.done() or len(events) < play.result()["events"] + play.result()["bars"]:
        try:
            frame = await asyncio.wait_for(ws.recv(), 0.2)
        except TimeoutError:
            assert time.monotonic() < deadline, "the played events did not all arrive"
            continue
        events.extend(json.loads(frame))
    return events


def test_play_sends_each_minute_then_its_bars_and_matches_ground_truth() -> None:
    syms = [f"D{i}" for i in range(40)]
    with SimulatorServer(symbols=syms, live=False, trades_per_second=0.5,
                         quotes_per_second=5, zipf=0.7, day_shape=True,
                         max_frame_events=300) as sim:
        async def run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
            ws = await websockets.connect(sim.ws_url)
            await ws.recv()
            await ws.send(json.dumps({"action": "auth", "params": "k"}))
            await ws.recv()
            await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.*,AM.*"}))
            for _ in range(3):
                await ws.recv()
            play = asyncio.create_task(asyncio.to_thread(sim.play, 180, OPEN_NS))
            events = await _read_while(ws, play, 60)
            result = play.result()
            await ws.close()
            return events, result
        events, result = asyncio.run(run())
        truth = sim.sent_events()
    assert result["start_ns"] == OPEN_NS and result["end_ns"] == OPEN_NS + 3 * MINUTE_NS
    bars = [e for e in events if e["ev"] == "AM"]
    ticks = [e for e in events if e["ev"] != "AM"]
    assert len(ticks) == result["events"] > 1000 and len(bars) == result["bars"] > 40
    assert {b["s"] for b in bars} == {(OPEN_NS + k * MINUTE_NS) // 10**6 for k in range(3)}
    # every AM comes after its minute's trades and quotes and before the next minute's
    for i, e in enumerate(events):
        if e["ev"] == "AM":
            assert all(x["t"] < e["e"] for x in events[:i] if x["ev"] != "AM")
            assert all(x["t"] >= e["e"] for x in events[i:] if x["ev"] != "AM")
    # the bars are the model's (an AM carries the minute's trades, so they agree)
    for b in bars:
        trades = [t for t in ticks if t["ev"] == "T" and t["sym"] == b["sym"]
                  and b["s"] <= t["t"] < b["e"]]
        assert b["o"] == trades[0]["p"] and b["c"] == trades[-1]["p"]
    key = lambda e: (e["ev"], e["sym"], e.get("q", e.get("s")))  # noqa: E731
    assert sorted(events, key=key) == sorted(truth, key=key)
