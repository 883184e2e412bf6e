"""The simulator's WebSocket protocol, seen through a raw ``websockets`` client."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from simulator.server import SimulatorServer
from tests.support.wait import wait_for, wait_for_async

pytestmark = pytest.mark.timeout(60)


def status(name: str, message: str) -> list[dict[str, str]]:
    return [{"ev": "status", "status": name, "message": message}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(symbols=["AAPL", "MSFT", "BRK.A"], trades_per_second=40,
                         quotes_per_second=40, max_connections=3, tick_ms=10) as server:
        yield server


async def recv_json(ws: Any, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def login(url: str, key: str = "test-key") -> Any:
    ws = await websockets.connect(url)
    assert await recv_json(ws) == status("connected", "Connected Successfully")
    await ws.send(json.dumps({"action": "auth", "params": key}))
    assert await recv_json(ws) == status("auth_success", "authenticated")
    return ws


async def collect(ws: Any, seconds: float) -> list[dict[str, Any]]:
    """Events read for ``seconds``: a sample of the stream where how many does not matter."""
    return await collect_until(ws, lambda _: False, "", seconds, enough_at_timeout=True)


async def collect_until(ws: Any, done: Callable[[list[dict[str, Any]]], bool],
                        what: str, timeout: float = 30.0, *,
                        enough_at_timeout: bool = False) -> list[dict[str, Any]]:
    """Events read until ``done(events)``: a test that reads for a fixed time instead
    gets fewer on a loaded machine."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        if left <= 0:
            if enough_at_timeout:
                break
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        try:
            frame = await recv_json(ws, left)
        except TimeoutError:
            continue
        assert isinstance(frame, list)
        events.extend(frame)
    return events


def conn_of(sim: SimulatorServer, subscription: str) -> int:
    """The id of the newest connection holding ``subscription``."""
    matches = [c["conn"] for c in sim.connections() if subscription in c["subscriptions"]]
    assert matches, subscription
    return matches[-1]


def post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_connect_auth_subscribe_acks_and_data_match_ground_truth(sim: SimulatorServer) -> None:
    async def run() -> tuple[list[dict[str, Any]], list[Any], int]:
        ws = await login(sim.ws_url)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL,Q.MSFT"}))
        acks = [await recv_json(ws), await recv_json(ws)]
        events = await collect(ws, 1.0)
        conn = conn_of(sim, "T.AAPL")
        # Stop the stream and read what was already on its way (the server counts a frame
        # as sent once queued): the unsubscribe acks come after it on the same socket.
        await ws.send(json.dumps({"action": "unsubscribe", "params": "T.AAPL,Q.MSFT"}))
        unsubscribed = []
        while len(unsubscribed) < 2:
            for item in await recv_json(ws):
                (unsubscribed if item["ev"] == "status" else events).append(item)
        await ws.close()
        assert [u["message"] for u in unsubscribed] == ["unsubscribed to: T.AAPL",
                                                        "unsubscribed to: Q.MSFT"]
        return events, acks, conn

    events, acks, conn = asyncio.run(run())
    assert acks == [status("success", "subscribed to: T.AAPL"),
                    status("success", "subscribed to: Q.MSFT")]
    assert {(e["ev"], e["sym"]) for e in events} == {("T", "AAPL"), ("Q", "MSFT")}
    wait_for(lambda: any(c["conn"] == conn and c["closed_ns"] for c in sim.connections()), 30,
             "the server to see the socket closed")
    expected = sim.sent_events(conn)
    with urllib.request.urlopen(f"{sim.url}/_sim/sent?conn={conn}") as resp:
        (log,) = json.loads(resp.read())
    assert log["counts"] == {"T": sum(e["ev"] == "T" for e in events),
                             "Q": sum(e["ev"] == "Q" for e in events)}
    assert {(w["ev"], w["sym"]) for w in log["windows"]} == {("T", "AAPL"), ("Q", "MSFT")}
    key = lambda e: (e["ev"], e["sym"], e["q"])  # noqa: E731
    assert sorted(events, key=key) == sorted(expected, key=key)
    assert len(events) > 20
    # Field format: ms timestamps, string ids, increasing sequence numbers per symbol.
    trades = [e for e in events if e["ev"] == "T"]
    assert all(isinstance(e["i"], str) and isinstance(e["t"], int) for e in trades)
    assert all(1e12 < e["t"] < 1e13 for e in events)
    seqs = [e["q"] for e in trades]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_auth_failed_then_closed() -> None:
    with SimulatorServer(symbols=["AAPL"], api_keys=["good"]) as sim:
        async def run() -> tuple[Any, int | None]:
            ws = await websockets.connect(sim.ws_url)
            await recv_json(ws)
            await ws.send(json.dumps({"action": "auth", "params": "bad"}))
            reply = await recv_json(ws)
            with pytest.raises(ConnectionClosed):
                await recv_json(ws)
            return reply, ws.close_code
        reply, code = asyncio.run(run())
        assert reply == status("auth_failed", "authentication failed")
        assert code == 1008

        async def good() -> None:
            ws = await login(sim.ws_url, "good")
            await ws.close()
        asyncio.run(good())


def test_subscribe_before_auth_is_an_error_and_invalid_json(sim: SimulatorServer) -> None:
    async def run() -> list[Any]:
        ws = await websockets.connect(sim.ws_url)
        await recv_json(ws)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.AAPL"}))
        first = await recv_json(ws)
        await ws.send("{not json")
        second = await recv_json(ws)
        await ws.close()
        return [first, second]
    first, second = asyncio.run(run())
    assert first == status("error", "not authorized")
    assert second == status("error", "invalid JSON")


def test_unsubscribe_stops_the_channel(sim: SimulatorServer) -> None:
    async def run() -> tuple[list[Any], list[dict[str, Any]]]:
        ws = await login(sim.ws_url)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.MSFT,Q.MSFT"}))
        await collect(ws, 0.3)
        await ws.send(json.dumps({"action": "unsubscribe", "params": "Q.MSFT"}))
        acks: list[Any] = []
        after: list[dict[str, Any]] = []
        while not acks:  # data frames may come before the ack
            frame = await recv_json(ws)
            if frame[0]["ev"] == "status":
                acks.append(frame)
        after = await collect_until(ws, lambda evs: sum(e["ev"] == "T" for e in evs) >= 10,
                                    "ten trades after the unsubscribe")
        await ws.close()
        return acks, after
    acks, after = asyncio.run(run())
    assert acks == [status("success", "unsubscribed to: Q.MSFT")]
    assert {e["ev"] for e in after} == {"T"}


def test_wildcard_covers_the_universe(sim: SimulatorServer) -> None:
    async def run() -> list[dict[str, Any]]:
        ws = await login(sim.ws_url)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*"}))
        assert await recv_json(ws) == status("success", "subscribed to: T.*")
        events = await collect_until(
            ws, lambda evs: len(evs) > 3 * 20 and len({e["sym"] for e in evs}) == 3,
            "trades of the three symbols")
        await ws.close()
        return events
    events = asyncio.run(run())
    assert {e["sym"] for e in events} == {"AAPL", "MSFT", "BRK.A"}
    assert {e["ev"] for e in events} == {"T"}
    # Frames mix symbols: many events per frame.
    assert len(events) > 3 * 20


def test_max_connections_status_then_close() -> None:
    with SimulatorServer(symbols=["AAPL"], max_connections=1) as sim:
        async def run() -> tuple[Any, int | None]:
            first = await login(sim.ws_url, "k1")
            ws = await websockets.connect(sim.ws_url)
            await recv_json(ws)
            await ws.send(json.dumps({"action": "auth", "params": "k1"}))
            reply = await recv_json(ws)
            with pytest.raises(ConnectionClosed):
                await recv_json(ws)
            other = await login(sim.ws_url, "k2")  # the limit is per key
            await other.close()
            await first.close()
            await wait_for_async(lambda: all(c["closed_ns"] for c in sim.connections()), 30,
                                 "the server to see every socket closed")
            again = await login(sim.ws_url, "k1")  # a closed socket frees its slot
            await again.close()
            return reply, ws.close_code
        reply, code = asyncio.run(run())
        assert reply[0]["ev"] == "status" and reply[0]["status"] == "max_connections"
        assert "Maximum number of websocket connections exceeded" in reply[0]["message"]
        assert code == 1008


def test_force_disconnect_via_control_endpoint(sim: SimulatorServer) -> None:
    async def run() -> tuple[list[dict[str, Any]], Any, int | None]:
        ws = await login(sim.ws_url)
        await ws.send(json.dumps({"action": "subscribe", "params": "T.BRK.A"}))
        await recv_json(ws)
        events = await collect(ws, 0.3)
        conn = conn_of(sim, "T.BRK.A")
        reply = await asyncio.to_thread(post, f"{sim.url}/_sim/force_disconnect",
                                        {"conn": conn})
        assert reply == {"disconnected": [conn]}
        last: Any = None
        with pytest.raises(ConnectionClosed):
            while True:
                frame = await recv_json(ws)
                if frame[0]["ev"] == "status":
                    last = frame
                else:
                    events.extend(frame)
        return events, last, ws.close_code
    events, last, code = asyncio.run(run())
    assert last == status("force_disconnect", "Forced disconnect")
    assert code == 1012
    conn = conn_of(sim, "T.BRK.A")
    info = next(c for c in sim.connections() if c["conn"] == conn)
    assert info["closed_by_server"] == "force_disconnect"
    # Everything written before the close arrived, and nothing else.
    assert sorted(e["q"] for e in events) == sorted(e["q"] for e in sim.sent_events(conn))


def test_slow_consumer_is_dropped() -> None:
    with SimulatorServer(symbols=["AAPL", "MSFT"], trades_per_second=5000,
                         quotes_per_second=5000, slow_consumer_bytes=300_000) as sim:
        async def run() -> list[Any]:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", sim.port))
            ws = await websockets.connect(sim.ws_url, sock=sock, max_queue=1)
            await recv_json(ws)
            await ws.send(json.dumps({"action": "auth", "params": "k"}))
            await recv_json(ws)
            await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.*"}))
            # Stop reading until the server gives up on us.
            await asyncio.to_thread(sim.wait_for, lambda s: any(
                c["closed_by_server"] == "slow_consumer" for c in s.connections()), 30)
            statuses = []
            try:
                while True:
                    frame = await recv_json(ws, 10)
                    statuses.extend(e for e in frame if e["ev"] == "status")
            except ConnectionClosed:
                pass
            return statuses
        statuses = asyncio.run(run())
        assert statuses[-1]["status"] == "slow_consumer"


def test_am_events_are_minute_aggregates(sim: SimulatorServer) -> None:
    async def run() -> list[Any]:
        ws = await login(sim.ws_url)
        await ws.send(json.dumps({"action": "subscribe", "params": "AM.AAPL,AM.BRK.A"}))
        await recv_json(ws)
        await recv_json(ws)
        minute = (time.time_ns() // 60_000_000_000 - 1) * 60_000_000_000
        await asyncio.to_thread(sim.send_minute, minute)
        frame = await recv_json(ws)
        await ws.close()
        return frame
    frame = asyncio.run(run())
    assert {e["sym"] for e in frame} == {"AAPL", "BRK.A"}
    for am in frame:
        assert set(am) >= {"ev", "sym", "v", "av", "op", "vw", "o", "c", "h", "l", "a", "z",
                           "s", "e"}
        assert am["e"] - am["s"] == 60_000
        assert am["l"] <= min(am["o"], am["c"]) <= max(am["o"], am["c"]) <= am["h"]
        assert am["av"] >= am["v"] > 0


def test_burst_sends_a_counted_batch() -> None:
    with SimulatorServer(symbols=["AAPL", "MSFT"], live=False, trades_per_second=1000,
                         quotes_per_second=1000, max_frame_events=500) as sim:
        async def run() -> tuple[list[dict[str, Any]], dict[str, Any]]:
            ws = await login(sim.ws_url)
            await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.AAPL"}))
            await recv_json(ws)
            await recv_json(ws)
            result = await asyncio.to_thread(post, f"{sim.url}/_sim/burst", {"events": 20000})
            events = await collect_until(ws, lambda evs: len(evs) >= result["events"],
                                         "the whole burst")
            await ws.close()
            return events, result
        events, result = asyncio.run(run())
        assert result["events"] == len(events) >= 20000 * 0.9
        assert result["frames"] >= len(events) // 500
        key = lambda e: (e["ev"], e["sym"], e["q"])  # noqa: E731
        assert sorted(events, key=key) == sorted(sim.sent_events(), key=key)
