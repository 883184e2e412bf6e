"""``python -m bench.producer``: simulator-format frames -> acknowledged Kafka writes.

What is timed (the same run, the same broker, the same librdkafka settings, unique topics):

* pipeline: the producer's real read loop (``ProducerSession._stream``) fed pre-built
  frames by an in-memory socket (the simulator's wire format, ``max_frame_events`` events
  per frame), i.e. the native frame encoder (C: parse + encode; or, without it, the
  reference path: orjson parse -> protocol -> mapping -> codec) -> produce, plus the
  final flush: events / second until Kafka acknowledged the last one;
* ceiling: confluent-kafka producing the very same records pre-encoded (bytes + key), with a
  counting delivery callback, plus the final flush;
* per stage (no Kafka): the native frame encoder (what the loop runs), and the reference
  path (parse+protocol, mapping, codec.encode), in microseconds per event.

"per core" divides by the main Python thread's CPU time (the loop is single-threaded;
librdkafka's own threads and the broker run beside it on the other core), and the process
CPU time (every thread) is shown too. The WebSocket transport itself is not included
(``--ws`` adds a run through the simulator, in its own process, over a real socket).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any

import orjson
from confluent_kafka import Producer
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from bench.services import bench_services
from common.config import Config, KafkaConfig, MassiveConfig, MetricsConfig, TopicsConfig
from producer.mapping import record_from_ws_event
from producer.protocol import MassiveProtocol, State
from producer.publisher import Publisher, producer_properties
from producer.session import ProducerSession

TARGET_PER_CORE = 400_000
TARGET_RATIO = 0.5


def make_events(n: int, symbols: list[str], seed: int = 42) -> list[dict[str, Any]]:
    """About ``n`` T and Q events (half each) from the simulator's model, in SIP order."""
    from simulator import wire
    from simulator.model import MarketModel

    rate = 20_000.0
    model = MarketModel(seed=seed, trades_per_second=rate, quotes_per_second=rate,
                        symbols=symbols)
    seconds = max(1, math.ceil(n / (2 * rate * len(symbols))))
    start = 1704205800 * 10**9  # 2024-01-02 14:30 UTC
    events: list[dict[str, Any]] = []
    for sym in symbols:
        end = start + seconds * 10**9
        events += wire.ws_trades(model.trades(sym, start, end))
        events += wire.ws_quotes(model.quotes(sym, start, end))
    events.sort(key=lambda e: e["t"])
    return events[:n]


def make_frames(events: list[dict[str, Any]], per_frame: int) -> list[bytes]:
    return [orjson.dumps(events[i:i + per_frame]) for i in range(0, len(events), per_frame)]


class FrameSocket:
    """Just enough of a websockets connection for ``_stream``: recv() then a clean close."""

    def __init__(self, frames: list[bytes]) -> None:
        self._it = iter(frames)

    async def recv(self, decode: bool | None = None) -> bytes:
        try:
            return next(self._it)
        except StopIteration:
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True) from None


def bench_config(bootstrap: str, partitions: int) -> Config:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicsConfig(bars=f"bench-producer-bars-{suffix}",
                          trades=f"bench-producer-trades-{suffix}",
                          quotes=f"bench-producer-quotes-{suffix}",
                          dead_letter=f"bench-producer-dlq-{suffix}")
    return Config(massive=MassiveConfig(api_key="bench", symbols=["*"],
                                        data_types=["trades", "quotes"]),
                  kafka=KafkaConfig(bootstrap_servers=bootstrap, topics=topics,
                                    partitions=partitions),
                  metrics=MetricsConfig(enabled=False))


@dataclasses.dataclass
class Run:
    events: int
    wall_s: float
    thread_cpu_s: float
    process_cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.wall_s

    @property
    def per_core(self) -> float:
        return self.events / self.thread_cpu_s

    def line(self, name: str) -> str:
        return (f"{name:<9} {self.rate:>11,.0f} events/s  wall {self.wall_s:6.2f}s  "
                f"main-thread CPU {self.thread_cpu_s:6.2f}s ({self.per_core:>9,.0f}/core-s)  "
                f"process CPU {self.process_cpu_s:6.2f}s")


def _clock() -> tuple[float, float, float]:
    return time.perf_counter(), time.thread_time(), time.process_time()


def _since(t0: tuple[float, float, float], events: int) -> Run:
    t1 = _clock()
    return Run(events, t1[0] - t0[0], t1[1] - t0[1], t1[2] - t0[2])


def run_pipeline(config: Config, frames: list[bytes], n_events: int) -> Run:
    publisher = Publisher(config, client_id="bench-pipeline")
    publisher.wait_until_reachable(15)
    session = ProducerSession(config, publisher)
    proto = MassiveProtocol("bench", session.channels, session.stats)
    proto.state = State.SUBSCRIBED
    _warm(publisher, config)

    async def go() -> None:
        with contextlib.suppress(ConnectionClosedOK):
            await session._stream(FrameSocket(frames), proto)  # type: ignore[arg-type]

    t0 = _clock()
    asyncio.run(go())
    remaining = publisher.flush(120)
    run = _since(t0, n_events)
    assert remaining == 0, f"{remaining} records not acknowledged"
    produced = sum(session.events_by_kind.values())
    assert produced == n_events, (produced, n_events, session.stats)
    assert publisher.delivered >= n_events and publisher.failed == 0
    return run


def run_ceiling(config: Config, frames: list[bytes], codec: Any, per_frame: int) -> Run:
    messages = []
    topics = {"trade": config.kafka.topics.trades, "quote": config.kafka.topics.quotes,
              "bar": config.kafka.topics.bars}
    for frame in frames:
        for ev in orjson.loads(frame):
            kind, record = record_from_ws_event(ev, time.time_ns())
            messages.append((topics[kind], codec.encode(kind, record), record["symbol"]))
    failed = [0]

    def on_delivery(err: Any, msg: Any) -> None:  # same settings: reports only errors
        if err is not None:
            failed[0] += 1

    props = producer_properties(config, "bench-ceiling")
    props["on_delivery"] = on_delivery
    producer = Producer(props)
    producer.list_topics(timeout=15)
    for topic in set(topics.values()):
        producer.produce(topic, b"warm-up", b"warm-up")
    producer.flush(30)
    produce, poll = producer.produce, producer.poll
    t0 = _clock()
    for i, (topic, value, key) in enumerate(messages):
        try:
            produce(topic, value, key)
        except BufferError:
            poll(0.05)
            produce(topic, value, key)
        if i % per_frame == 0:
            poll(0)
    remaining = producer.flush(120)
    run = _since(t0, len(messages))
    assert remaining == 0 and failed[0] == 0
    return run


def run_ws(config: Config, symbols: list[str], n_events: int, per_frame: int) -> Run:
    """The simulator in its own process bursts ``n_events`` over a real WebSocket; the
    producer session (this process, main thread) streams them to Kafka."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for var in ("MASSIVE_API_KEY", "MASSIVE_WS_SERVER", "MASSIVE_FETCHER_CONFIG"):
        env.pop(var, None)
    sim = subprocess.Popen(
        [sys.executable, "-m", "massive_fetcher", "simulator", "--host", "127.0.0.1",
         "--port", str(port), "--no-live", "--symbols", *symbols,
         "--trades-per-second", "20000", "--quotes-per-second", "20000",
         "--max-frame-events", str(per_frame), "--slow-consumer-bytes", str(2**31),
         "--log-level", "WARNING"], env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.1)
        cfg = config.replace(massive=dataclasses.replace(
            config.massive, ws_server=f"ws://127.0.0.1:{port}", symbols=symbols))
        publisher = Publisher(cfg, client_id="bench-ws")
        _warm(publisher, cfg)
        session = ProducerSession(cfg, publisher)

        def burst(n: int) -> int:
            req = urllib.request.Request(base + "/_sim/burst", method="POST",
                                         data=orjson.dumps({"events": n}))
            with urllib.request.urlopen(req, timeout=600) as r:
                return int(orjson.loads(r.read())["events"])

        async def go() -> Run:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(session.run())
            while not (session.connected and session.state == "subscribed"):
                await asyncio.sleep(0.01)
            warm = await loop.run_in_executor(None, burst, 2000)
            while sum(session.events_by_kind.values()) < warm:
                await asyncio.sleep(0.01)
            before = sum(session.events_by_kind.values())
            t0 = _clock()
            sent = await loop.run_in_executor(None, burst, n_events)
            while sum(session.events_by_kind.values()) < before + sent:
                await asyncio.sleep(0.001)
            remaining = await loop.run_in_executor(None, publisher.flush, 120)
            run = _since(t0, sent)
            assert remaining == 0 and publisher.failed == 0
            session.request_stop()
            await task
            return run

        return asyncio.run(go())
    finally:
        sim.terminate()
        sim.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _warm(publisher: Publisher, config: Config) -> None:
    """Topic metadata and the idempotent producer id, fetched before the clock starts."""
    for topic in (config.kafka.topics.trades, config.kafka.topics.quotes):
        publisher._producer.produce(topic, b"warm-up", b"warm-up")
    publisher.flush(30)


def stages(frames: list[bytes], codec: Any, n_events: int) -> dict[str, float]:
    """Microseconds per event of each stage on its own (best of 3), without Kafka."""
    from producer.nativeframes import NativeFrames

    proto = MassiveProtocol("bench", ["T.*", "Q.*"])
    proto.state = State.SUBSCRIBED
    parsed = [proto.feed(f) for f in frames]
    mapped = [[record_from_ws_event(ev, 1) for ev in evs] for evs in parsed]

    def t_parse() -> None:
        for f in frames:
            proto.feed(f)

    def t_map() -> None:
        for evs in parsed:
            for ev in evs:
                record_from_ws_event(ev, 1)

    def t_encode() -> None:
        encode = codec.encode
        for recs in mapped:
            for kind, rec in recs:
                encode(kind, rec)

    native = NativeFrames(codec, {"bar": "b", "trade": "t", "quote": "q"})

    def t_native() -> None:
        encode = native.encode
        for f in frames:
            if encode(f, time.time_ns()) is None:
                raise AssertionError("the native encoder refused a simulator frame")

    runs = [("parse+protocol", t_parse), ("[reference: mapping", t_map),
            ("codec.encode]", t_encode)]
    if native.enabled:  # what the loop runs when the C extension is built
        runs.insert(0, ("native frame encode (parse+encode, C)", t_native))
    out = {}
    for name, fn in runs:
        times = []
        for _ in range(3):
            t = time.thread_time()
            fn()
            times.append(time.thread_time() - t)
        out[name] = min(times) / n_events * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.producer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--frame-events", type=int, default=2000,
                        help="events per WebSocket frame (the simulator's max_frame_events)")
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; best is shown")
    parser.add_argument("--ws", action="store_true",
                        help="also run simulator (own process) -> WebSocket -> producer -> "
                             "Kafka")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka to use (default: $KAFKA_BOOTSTRAP_SERVERS, else one "
                             "started for the run)")
    args = parser.parse_args(argv)
    if args.bootstrap:
        return run_bench(args)
    with bench_services(marketstore=False) as svc:
        args.bootstrap = svc.kafka_bootstrap
        return run_bench(args)


def run_bench(args: argparse.Namespace) -> int:

    from schemas.codec import make_codec
    from schemas.topics import ensure_topics
    from simulator.universe import DEFAULT_TICKERS

    symbols = [t.ticker for t in DEFAULT_TICKERS][:args.symbols]
    print(f"generating {args.events:,} T/Q events for {len(symbols)} symbols "
          f"({args.frame_events} per frame) ...", flush=True)
    events = make_events(args.events, symbols)
    frames = make_frames(events, args.frame_events)
    n = len(events)
    config = bench_config(args.bootstrap, args.partitions)
    ensure_topics(config)
    codec = make_codec(config)
    print(f"Kafka {args.bootstrap}, topics {config.kafka.topics.trades} / "
          f"{config.kafka.topics.quotes} ({args.partitions} partitions), "
          f"compression {config.kafka.compression}, acks=all, idempotent", flush=True)

    st = stages(frames, codec, n)
    pipelines: list[Run] = []
    ceilings: list[Run] = []
    for _ in range(args.repeat):
        ceilings.append(run_ceiling(config, frames, codec, args.frame_events))
        pipelines.append(run_pipeline(config, frames, n))
    best_p = max(pipelines, key=lambda r: r.rate)
    best_c = max(ceilings, key=lambda r: r.rate)
    print()
    print(f"events per run: {n:,} in {len(frames):,} frames; best of {args.repeat}")
    print(best_c.line("ceiling"))
    print(best_p.line("pipeline"))
    ratio = best_p.rate / best_c.rate
    print(f"ratio pipeline/ceiling: {ratio:.2f}  (target >= {TARGET_RATIO})")
    print(f"pipeline per core (main thread): {best_p.per_core:,.0f} events/s  "
          f"(target >= {TARGET_PER_CORE:,})")
    print(f"runs: pipeline {', '.join(f'{r.rate:,.0f}' for r in pipelines)}; "
          f"ceiling {', '.join(f'{r.rate:,.0f}' for r in ceilings)}")
    python_path = st["parse+protocol"] + st["[reference: mapping"] + st["codec.encode]"]
    print("per event, stages alone, main-thread CPU (us): "
          + ", ".join(f"{k} {v:.2f}" for k, v in st.items()))
    native_us = st.get("native frame encode (parse+encode, C)")
    if native_us is None:
        print("the C extension schemas._native is not built: the loop runs the Python path")
    else:
        print(f"native parse + encode: {native_us:.2f} us -> {1e6 / native_us:,.0f} "
              "events/s before Kafka (the loop's path)")
    print(f"reference path (parse + mapping + codec): {python_path:.2f} us -> "
          f"{1e6 / python_path:,.0f} events/s before Kafka")
    if args.ws:
        ws_run = run_ws(config, symbols, n, args.frame_events)
        print(ws_run.line("websocket") + f"  (ratio to ceiling {ws_run.rate / best_c.rate:.2f};"
              " simulator in its own process on the same 2 cores)")
    produce_us = best_c.thread_cpu_s / best_c.events * 1e6
    print(f"produce+delivery report (ceiling main-thread CPU per event): {produce_us:.2f} us")
    print(f"median pipeline {statistics.median(r.rate for r in pipelines):,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
