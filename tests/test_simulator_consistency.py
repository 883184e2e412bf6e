"""The simulator agrees with itself (WS vs REST vs bars) and the official client reads it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from massive import RESTClient, WebSocketClient
from massive.websocket.models import EquityAgg, EquityQuote, EquityTrade

from simulator.model import MINUTE_NS, NS
from simulator.server import SimulatorServer
from tests.support.wait import wait_for_async

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(symbols=["AAPL", "BRK.A", "HMBL"], trades_per_second=30,
                         quotes_per_second=30, max_connections=5) as server:
        yield server


async def stream(sim: SimulatorServer, params: str,
                 seconds: float) -> tuple[list[dict[str, Any]], int]:
    """Events of ``params`` for ``seconds``, and the connection's id.

    The server counts a frame as sent once it is queued, so the stream is stopped by an
    unsubscribe and read up to its acks (which come after any queued frame on the same
    socket) before the caller compares with the server's ground truth.
    """
    events: list[dict[str, Any]] = []
    async with websockets.connect(sim.ws_url) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "auth", "params": "k"}))
        await ws.recv()
        await ws.send(json.dumps({"action": "subscribe", "params": params}))
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), left))
            except TimeoutError:
                break
            events.extend(e for e in frame if e["ev"] != "status")
        first = params.split(",")[0]
        conn = max(c["conn"] for c in sim.connections() if first in c["subscriptions"])
        await ws.send(json.dumps({"action": "unsubscribe", "params": params}))
        acks = 0
        while acks < len(params.split(",")):
            for item in json.loads(await asyncio.wait_for(ws.recv(), 10)):
                if item["ev"] != "status":
                    events.append(item)
                elif item["message"].startswith("unsubscribed to: "):
                    acks += 1
    return events, conn


def test_rest_trades_of_a_streamed_window_equal_the_ws_trades(sim: SimulatorServer) -> None:
    events, conn = asyncio.run(stream(sim, "T.AAPL,T.HMBL,Q.AAPL", 1.5))
    sent = sim.sent(conn)[0]
    client = RESTClient("k", base=sim.url)
    for sym in ("AAPL", "HMBL"):
        spans = next(w["spans"] for w in sent["windows"] if (w["ev"], w["sym"]) == ("T", sym))
        assert len(spans) == 1  # one contiguous window from subscribe to unsubscribe
        lo, hi = spans[0]
        rest = list(client.list_trades(sym, timestamp_gte=lo, timestamp_lt=hi, order="asc",
                                       limit=50000))
        ws = [e for e in events if e["ev"] == "T" and e["sym"] == sym]
        assert len(ws) == len(rest) > 20
        for w, r in zip(ws, rest, strict=True):
            assert w["t"] == r.sip_timestamp // 1_000_000
            assert (w["q"], w["i"], w["p"], w["x"]) == (
                r.sequence_number, r.id, r.price, r.exchange)
            assert float(w.get("ds", w["s"])) == r.size
            assert w.get("c") == r.conditions
            assert w.get("trft") == (r.trf_timestamp // 1_000_000 if r.trf_timestamp
                                     else None)
    quotes = [e for e in events if e["ev"] == "Q"]
    lo, hi = next(w["spans"][0] for w in sent["windows"] if w["ev"] == "Q")
    rest_q = list(client.list_quotes("AAPL", timestamp_gte=lo, timestamp_lt=hi, order="asc",
                                     limit=50000))
    assert [(q["q"], q["bp"], q["ap"], q["t"]) for q in quotes] == [
        (r.sequence_number, r.bid_price, r.ask_price, r.sip_timestamp // 1_000_000)
        for r in rest_q]
    # Trades and quotes share one sequence per ticker.
    trade_seqs = {e["q"] for e in events if e["ev"] == "T" and e["sym"] == "AAPL"}
    assert trade_seqs.isdisjoint(q["q"] for q in quotes)


def test_am_equals_rest_minute_bar_equals_aggregated_trades(sim: SimulatorServer) -> None:
    minute = (time.time_ns() // MINUTE_NS - 2) * MINUTE_NS

    async def run() -> list[dict[str, Any]]:
        async with websockets.connect(sim.ws_url) as ws:
            await ws.recv()
            await ws.send(json.dumps({"action": "auth", "params": "k"}))
            await ws.recv()
            await ws.send(json.dumps({"action": "subscribe", "params": "AM.*"}))
            await ws.recv()
            await asyncio.to_thread(sim.send_minute, minute)
            # A live minute boundary may slip its own AM frame (the minute just ended) in
            # first: take the frame of the minute asked for.
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if all(am["s"] == minute // 1_000_000 for am in frame):
                    return frame

    frame = asyncio.run(run())
    assert {am["sym"] for am in frame} == {"AAPL", "BRK.A", "HMBL"}
    client = RESTClient("k", base=sim.url)
    for am in frame:
        sym = am["sym"]
        assert am["s"] == minute // 1_000_000
        (bar,) = list(client.list_aggs(sym, 1, "minute", am["s"], am["s"]))
        assert (bar.open, bar.high, bar.low, bar.close, bar.vwap, bar.timestamp) == (
            am["o"], am["h"], am["l"], am["c"], am["vw"], am["s"])
        assert bar.volume == pytest.approx(am["v"], abs=1e-6)
        trades = list(client.list_trades(sym, timestamp_gte=minute,
                                          timestamp_lt=minute + MINUTE_NS, order="asc",
                                          limit=50000))
        prices = [t.price for t in trades]
        volume = sum(t.size for t in trades)
        assert bar.transactions == len(trades) == 30 * 60
        assert (bar.open, bar.close, bar.high, bar.low) == (
            prices[0], prices[-1], max(prices), min(prices))
        assert bar.volume == pytest.approx(volume, abs=1e-6)
        assert bar.vwap == pytest.approx(
            sum(t.price * t.size for t in trades) / volume, abs=1e-4)
        assert am["z"] == round(volume / len(trades))
        # Day-to-date figures: the day's first trade and the running volume / VWAP.
        day = minute - minute % (86_400 * NS)
        first = next(iter(client.list_trades(sym, timestamp_gte=day, order="asc", limit=1)))
        assert am["op"] == first.price
        day_bars = list(client.list_aggs(sym, 1, "minute", day // 1_000_000, am["s"],
                                         limit=50000))
        assert am["av"] == pytest.approx(sum(b.volume for b in day_bars), abs=1e-3)
        assert am["otc"] if sym == "HMBL" else "otc" not in am


def test_hour_bars_are_exact_regroupings_of_minute_bars(sim: SimulatorServer) -> None:
    client = RESTClient("k", base=sim.url)
    minutes = list(client.list_aggs("AAPL", 1, "minute", "2023-06-01", "2023-06-01",
                                    limit=50000))
    hours = list(client.list_aggs("AAPL", 1, "hour", "2023-06-01", "2023-06-01"))
    assert len(hours) == 24
    for i, h in enumerate(hours):
        part = minutes[60 * i:60 * (i + 1)]
        assert h.timestamp == part[0].timestamp
        assert (h.open, h.close) == (part[0].open, part[-1].close)
        assert h.high == max(m.high for m in part) and h.low == min(m.low for m in part)
        assert h.transactions == sum(m.transactions for m in part)
        assert h.volume == pytest.approx(sum(m.volume for m in part), abs=1e-6)


def test_same_seed_same_data_other_seed_other_data() -> None:
    def fetch(seed: int) -> tuple[Any, ...]:
        with SimulatorServer(symbols=["AAPL"], seed=seed, live=False) as s:
            client = RESTClient("k", base=s.url)
            trades = client.list_trades("AAPL", timestamp="2022-03-04", limit=200,
                                        order="asc", raw=True).data
            bars = client.get_aggs("AAPL", 1, "day", "2022-01-01", "2022-03-01", raw=True).data
            return json.loads(trades)["results"], json.loads(bars)["results"]
    assert fetch(7) == fetch(7)
    assert fetch(7) != fetch(8)


def test_official_websocket_client_parses_the_stream(sim: SimulatorServer) -> None:
    received: list[Any] = []
    client = WebSocketClient(api_key="k", feed=sim.feed, market="stocks", secure=False,
                             subscriptions=["T.*", "Q.AAPL", "AM.*"], max_reconnects=0)

    async def handle(msgs: list[Any]) -> None:
        received.extend(msgs)

    symbols = {"AAPL", "BRK.A", "HMBL"}

    def seen(kind: type) -> set[str]:
        return {m.symbol for m in received if isinstance(m, kind)}

    def streaming() -> bool:
        subscribed = any(c["closed_ns"] is None and "AM.*" in c["subscriptions"]
                         for c in sim.connections())
        return subscribed and seen(EquityTrade) == symbols and bool(seen(EquityQuote))

    async def run() -> None:
        task = asyncio.create_task(client.connect(handle))
        await wait_for_async(streaming, 30, "trades of every symbol, quotes, AM.* subscribed")
        await asyncio.to_thread(sim.send_minute, time.time_ns() - MINUTE_NS)
        await wait_for_async(lambda: seen(EquityAgg) == symbols, 30, "a bar of every symbol")
        await client.close()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    kinds = {type(m) for m in received}
    assert kinds == {EquityTrade, EquityQuote, EquityAgg}
    trades = [m for m in received if isinstance(m, EquityTrade)]
    assert {t.symbol for t in trades} == {"AAPL", "BRK.A", "HMBL"}
    assert all(isinstance(t.id, str) and t.timestamp and t.sequence_number and t.price
               for t in trades)
    fractional = [t for t in trades if t.fractional_shares is not None]
    assert all(float(t.fractional_shares) != t.size for t in fractional)
    aggs = [m for m in received if isinstance(m, EquityAgg)]
    assert {a.symbol for a in aggs} == {"AAPL", "BRK.A", "HMBL"}
    assert all(a.accumulated_volume and a.official_open_price and a.vwap for a in aggs)


def test_official_client_reconnects_after_force_disconnect() -> None:
    with SimulatorServer(symbols=["AAPL"], trades_per_second=50, quotes_per_second=0) as sim:
        received: list[Any] = []
        client = WebSocketClient(api_key="k", feed=sim.feed, market="stocks", secure=False,
                                 subscriptions=["T.AAPL"], max_reconnects=3)

        async def handle(msgs: list[Any]) -> None:
            received.extend(msgs)

        async def run() -> int:
            task = asyncio.create_task(client.connect(handle))
            await wait_for_async(lambda: len(received) > 10, 30, "the first trades")
            assert await asyncio.to_thread(sim.force_disconnect) == [1]
            before = len(received)

            def resubscribed() -> bool:
                conns = sim.connections()
                return len(conns) == 2 and conns[1]["subscriptions"] == ["T.AAPL"]

            await wait_for_async(resubscribed, 30, "the reconnect's subscription")
            await wait_for_async(lambda: len(received) > before + 10, 30,
                                 "trades after the reconnect")
            await client.close()
            await asyncio.wait_for(task, 5)
            return before

        before = asyncio.run(run())
        first, second = sim.connections()
        assert first["closed_by_server"] == "force_disconnect"
        assert second["closed_by_server"] is None
        # The client got all that was sent before the forced close, then (as far as it
        # read before closing itself) what the second connection sent.
        got = [(m.sequence_number, m.price) for m in received]
        sent1 = [(e["q"], e["p"]) for e in sim.sent_events(first["conn"])]
        sent2 = [(e["q"], e["p"]) for e in sim.sent_events(second["conn"])]
        assert got[:len(sent1)] == sent1 and len(sent1) >= before
        rest = got[len(sent1):]
        assert len(rest) > 10 and sent2[:len(rest)] == rest
