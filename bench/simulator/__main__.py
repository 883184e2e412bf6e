"""``python -m bench.simulator``: how fast the simulator makes and ships events.

Prints (1) the model's generation rate, (2) generation + Massive-format serialisation
(what the live stream and a burst prepare), and (3) the firehose: a burst sent by a
simulator running in its own process to a raw WebSocket client here, counting the events
the client parsed per second. The ratio (3)/(2) tells whether the wire or the
preparation is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import orjson
import websockets

from simulator import wire
from simulator.model import NS, MarketModel

DAY = 1_704_153_600 * NS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_model(seconds: int, rate: float) -> tuple[float, float]:
    model = MarketModel(42, rate, rate)
    t0 = time.perf_counter()
    n = len(model.trades("AAPL", DAY, DAY + seconds * NS))
    n += len(model.quotes("AAPL", DAY, DAY + seconds * NS))
    gen = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    data = orjson.dumps(wire.ws_trades(model.trades("MSFT", DAY, DAY + seconds * NS)))
    data += orjson.dumps(wire.ws_quotes(model.quotes("MSFT", DAY, DAY + seconds * NS)))
    ser = n / (time.perf_counter() - t0)
    return gen, ser


async def firehose(port: int, events: int) -> tuple[int, float, dict[str, object]]:
    async with websockets.connect(f"ws://127.0.0.1:{port}/stocks", max_size=None,
                                  compression=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"action": "auth", "params": "bench"}))
        await ws.recv()
        await ws.send(json.dumps({"action": "subscribe", "params": "T.*,Q.*"}))
        await ws.recv()
        await ws.recv()

        def burst() -> dict[str, object]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/_sim/burst",
                                         data=json.dumps({"events": events}).encode(),
                                         method="POST")
            with urllib.request.urlopen(req, timeout=600) as resp:
                return json.loads(resp.read())

        result_task = asyncio.create_task(asyncio.to_thread(burst))
        received = 0
        first = await ws.recv()  # preparation happens before the first frame
        t0 = time.perf_counter()
        received += len(orjson.loads(first))
        while not (result_task.done() and received >= result_task.result()["events"]):
            try:
                received += len(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
            except TimeoutError:
                break
        elapsed = time.perf_counter() - t0
        return received, elapsed, await result_task


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    args = parser.parse_args()

    gen, ser = bench_model(20, 5000)
    print(f"model generation:             {gen:>12,.0f} events/s")
    print(f"generation + serialisation:   {ser:>12,.0f} events/s")

    port = free_port()
    symbols = [f"B{i:03d}" for i in range(args.symbols)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "massive_fetcher", "simulator", "--port", str(port),
         "--no-live", "--trades-per-second", "5000", "--quotes-per-second", "5000",
         "--symbols", *symbols, "--log-level", "WARNING"],
        env={k: v for k, v in os.environ.items() if k != "MASSIVE_FETCHER_CONFIG"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        received, elapsed, result = asyncio.run(firehose(port, args.events))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    rate = received / elapsed if elapsed else 0.0
    print(f"burst prepared in:            {result['prepare_s']:>12.2f} s "
          f"({result['events']:,} events, {result['frames']:,} frames)")
    print(f"firehose (server -> client):  {rate:>12,.0f} events/s "
          f"({received:,} events parsed in {elapsed:.2f} s)")
    print(f"ratio firehose / serialisation: {rate / ser:.2f}")
    return 0 if received == result["events"] else 1


if __name__ == "__main__":
    sys.exit(main())
