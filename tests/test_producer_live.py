"""The producer against the real Kafka and the simulator: exactly once, gaps, failures.

Each test uses its own topics (uuid suffix) and its own simulator on a free port. The
simulator reports exactly which events it wrote on each connection; those events, mapped
through ``producer.mapping``, must be in the topics exactly once with equal content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from common.config import (
    Config,
    KafkaConfig,
    MassiveConfig,
    MetricsConfig,
    ProducerConfig,
    TopicsConfig,
)
from common.metrics import MetricsServer
from producer.gaps import read_gaps
from producer.mapping import record_from_ws_event
from producer.publisher import Publisher
from producer.session import (
    EXIT_AUTH_FAILED,
    EXIT_GAVE_UP,
    EXIT_OK,
    ProducerSession,
)
from schemas.codec import make_codec
from schemas.topics import ensure_topics
from simulator import wire
from simulator.server import SimulatorServer
from tests.support.configfile import write_config_file
from tests.support.liveproducer import KEY, InProcessProducer, cli_env, cli_producer, stop_cleanly
from tests.support.readback import read_to_end
from tests.support.wait import wait_for, wait_for_async

DATA = Path(__file__).parent / "data" / "producer"
SYMBOLS = ["AAPL", "MSFT"]
# -- helpers ---------------------------------------------------------------------------

def make_config(kafka_bootstrap: str, ws_server: str, tmp_path: Path,
                data_types: tuple[str, ...] = ("bars", "trades", "quotes"),
                **producer: Any) -> Config:
    suffix = uuid.uuid4().hex[:10]
    topics = TopicsConfig(bars=f"test-producer-bars-{suffix}",
                          trades=f"test-producer-trades-{suffix}",
                          quotes=f"test-producer-quotes-{suffix}",
                          dead_letter=f"test-producer-dlq-{suffix}")
    settings = {"reconnect_initial_s": 0.1, "reconnect_max_s": 1.0,
                "gaps_file": str(tmp_path / "gaps.jsonl"), "gap_repair": False,
                "kafka_wait_s": 10.0, **producer}
    return Config(
        massive=MassiveConfig(api_key=KEY, ws_server=ws_server, symbols=list(SYMBOLS),
                              data_types=list(data_types)),  # type: ignore[arg-type]
        kafka=KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=topics, partitions=2),
        producer=ProducerConfig(**settings),
        metrics=MetricsConfig(producer_port=0))


def canonical(kind: str, record: dict[str, Any]) -> bytes:
    """A record without its receipt time, as comparable bytes."""
    body = {k: v for k, v in record.items() if k != "received_ns"}
    return orjson.dumps([kind, body], option=orjson.OPT_SORT_KEYS)


def truth(events: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(canonical(*record_from_ws_event(ev, None)) for ev in events)


def consume_all(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """Every record now in the three topics (read up to the high watermarks)."""
    codec = make_codec(config)
    topics = [config.kafka.topics.bars, config.kafka.topics.trades, config.kafka.topics.quotes]
    expected_topic = dict(zip(("bar", "trade", "quote"), topics, strict=True))
    out: list[tuple[str, dict[str, Any]]] = []
    for msg in read_to_end(config, topics):
        kind, record = codec.decode(msg.value())
        assert msg.key() == record["symbol"].encode()
        assert msg.topic() == expected_topic[kind]
        out.append((kind, record))
    return out


def assert_exactly_once(consumed: list[tuple[str, dict[str, Any]]],
                        sent: list[dict[str, Any]]) -> None:
    got = Counter(canonical(k, r) for k, r in consumed)
    want = truth(sent)
    assert sum(want.values()) > 0, "the simulator sent nothing"
    dupes = [k for k, n in got.items() if n > 1]
    assert not dupes, f"{len(dupes)} records in Kafka more than once, e.g. {dupes[0]!r}"
    missing = want - got
    extra = got - want
    assert not missing, f"{sum(missing.values())} sent events not in Kafka, e.g. " \
                        f"{next(iter(missing))!r}"
    assert not extra, f"{sum(extra.values())} records in Kafka never sent, e.g. " \
                      f"{next(iter(extra))!r}"
    for _, record in consumed:
        assert record["source"] == "live"
        assert isinstance(record["received_ns"], int)


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(symbols=SYMBOLS, trades_per_second=40, quotes_per_second=40,
                         seed=7, tick_ms=20) as sim:
        yield sim


def wait_streaming(simulator: SimulatorServer, trades: int) -> None:
    """Until the newest connection was sent more than ``trades`` trades."""
    def streaming() -> bool:
        conns = simulator.connections()
        return bool(conns) and conns[-1]["counts"].get("T", 0) > trades
    wait_for(streaming, timeout_s=60, what="the CLI producer to stream")


def write_config(config: Config, path: Path) -> Path:
    m, p = config.massive, config.producer
    return write_config_file(
        config, path,
        massive={"api_key": m.api_key, "ws_server": m.ws_server, "base_url": m.base_url,
                 "symbols": m.symbols, "data_types": m.data_types},
        producer={"gaps_file": p.gaps_file, "gap_repair": p.gap_repair,
                  "reconnect_initial_s": 0.1, "reconnect_max_s": 1.0,
                  "kafka_wait_s": p.kafka_wait_s},
        metrics={"producer_port": 0})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- tests -----------------------------------------------------------------------------

def test_every_sent_event_is_in_kafka_exactly_once(kafka_bootstrap: str, tmp_path: Path,
                                                   simulator: SimulatorServer) -> None:
    config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{simulator.port}", tmp_path)
    ensure_topics(config)
    with InProcessProducer(config) as prod:
        metrics = MetricsServer(prod.registry, "127.0.0.1", 0,
                                health=prod.session.health).start()
        try:
            wait_for(lambda: prod.events() >= 100, 20, what="100 events")
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/healthz") as r:
                assert r.status == 200
            burst = simulator.burst(3000)  # many events per frame, as fast as it can
            assert burst["events"] >= 2000
            sent_so_far = burst["events"]
            wait_for(lambda: prod.events() >= sent_so_far + 100, 20, what="the burst")
        finally:
            code = prod.stop()
            metrics.stop()
    assert code == EXIT_OK
    sent = simulator.sent_events()
    assert len(simulator.connections()) == 1
    consumed = consume_all(config)
    assert_exactly_once(consumed, sent)
    print(f"{len(consumed)} records, {prod.session.stats.frames} frames")
    s = prod.session
    assert s.stats.malformed_total == 0 and s.reconnects == 0 and not s.gaps
    if importlib.util.find_spec("schemas._native") is not None:
        assert s.native_frames > 0  # the compiled path carried (part of) the stream
    assert prod.publisher.delivered == len(consumed) and prod.publisher.failed == 0
    text = generate_latest(prod.registry).decode()
    by_type = Counter({"trades": 0, "quotes": 0, "bars": 0})
    for kind, _ in consumed:
        by_type[{"bar": "bars", "trade": "trades", "quote": "quotes"}[kind]] += 1
    for data_type, n in by_type.items():
        assert f'massive_fetcher_producer_events_total{{type="{data_type}"}} {float(n)}' in text
    assert "massive_fetcher_producer_frames_total" in text
    assert "massive_fetcher_producer_event_lag_seconds" in text
    client = f'client_id="{prod.publisher.client_id}"'
    assert f"massive_fetcher_kafka_delivered_total{{{client}}} {float(len(consumed))}" in text


def test_forced_disconnect_reconnects_and_records_the_gap(
        kafka_bootstrap: str, tmp_path: Path, simulator: SimulatorServer) -> None:
    config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{simulator.port}", tmp_path,
                         data_types=("trades", "quotes"))
    ensure_topics(config)
    gaps_seen: list[Any] = []

    async def on_gap(gap: Any) -> None:
        gaps_seen.append(gap)

    with InProcessProducer(config) as prod:
        prod.session.add_gap_listener(on_gap)
        wait_for(lambda: prod.events() >= 50, 20, what="events before the disconnect")
        assert simulator.force_disconnect() == [1]
        wait_for(lambda: prod.session.reconnects >= 1 and prod.session.connected, 20,
                 what="the reconnection")
        before = prod.events()
        wait_for(lambda: prod.events() >= before + 50, 20, what="events after reconnecting")
        code = prod.stop()
    assert code == EXIT_OK
    conns = simulator.connections()
    assert [c["conn"] for c in conns] == [1, 2]
    assert conns[0]["closed_by_server"] == "force_disconnect"
    consumed = consume_all(config)
    sent = simulator.sent_events()
    assert_exactly_once(consumed, sent)
    # the outage is recorded once, in the file and for the listener
    (gap,) = prod.session.gaps
    assert read_gaps(config.producer.gaps_file) == [gap]
    assert gaps_seen == [gap]
    assert "force_disconnect" in gap.reason
    assert gap.symbols == tuple(SYMBOLS) and gap.data_types == ("trades", "quotes")
    assert gap.start_ns < gap.end_ns and gap.attempts == 1
    # every event the simulator did not send (between the two connections' windows)
    # lies inside the recorded gap, so repairing the gap repairs the outage
    first, second = (simulator.sent(c["conn"])[0] for c in conns)
    missing = 0
    for w1 in first["windows"]:
        w2 = next(w for w in second["windows"] if (w["ev"], w["sym"]) == (w1["ev"], w1["sym"]))
        hole_start, hole_end = w1["spans"][-1][1], w2["spans"][0][0]
        model = simulator.model
        if w1["ev"] == "T":
            events = wire.ws_trades(model.trades(w1["sym"], hole_start, hole_end))
        else:
            events = wire.ws_quotes(model.quotes(w1["sym"], hole_start, hole_end))
        for ev in events:
            missing += 1
            assert gap.start_ns <= ev["t"] * 1_000_000 <= gap.end_ns
    assert gap.start_ns <= min(w["spans"][-1][1] for w in first["windows"])
    print(f"gap {(gap.end_ns - gap.start_ns) / 1e6:.1f} ms, {missing} events missed, "
          f"{len(consumed)} in Kafka")
    assert missing > 0, "the outage lost nothing: the test proves nothing"


def test_malformed_frames_are_skipped_and_counted(kafka_bootstrap: str,
                                                  tmp_path: Path) -> None:
    from websockets.asyncio.server import serve

    good = [line for line in (DATA / "good_frames.jsonl").read_text().splitlines()
            if '"status"' not in line]
    bad = (DATA / "bad_frames.jsonl").read_text().splitlines()
    done = asyncio.Event()

    async def handler(ws: Any) -> None:
        await ws.send('[{"ev":"status","status":"connected","message":"Connected Successfully"}]')
        assert json.loads(await ws.recv()) == {"action": "auth", "params": KEY}
        await ws.send('[{"ev":"status","status":"auth_success","message":"authenticated"}]')
        sub = json.loads(await ws.recv())
        for channel in sub["params"].split(","):
            await ws.send(json.dumps([{"ev": "status", "status": "success",
                                       "message": f"subscribed to: {channel}"}]))
        for i, line in enumerate(bad):  # bad frames interleaved with good ones
            await ws.send(line)
            if i < len(good):
                await ws.send(good[i])
        for line in good[len(bad):]:
            await ws.send(line)
        await ws.send(b"\xff\xfe binary garbage")
        done.set()
        await ws.wait_closed()

    async def main() -> tuple[ProducerSession, Publisher, Config]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{port}", tmp_path)
            ensure_topics(config)
            publisher = Publisher(config)
            session = ProducerSession(config, publisher)
            task = asyncio.create_task(session.run())
            await asyncio.wait_for(done.wait(), 20)
            # connected + auth_success + one ack per channel + every frame sent
            total = 2 + len(session.channels) + len(good) + len(bad) + 1
            await wait_for_async(lambda: session.stats.frames >= total, 20,
                                 f"{total} frames read")
            session.request_stop()
            assert await asyncio.wait_for(task, 20) == EXIT_OK
            assert publisher.flush(30) == 0
            return session, publisher, config

    session, publisher, config = asyncio.run(main())
    # the bad file holds 18 malformed items and, in one frame, 2 good trades (900, 901)
    assert session.stats.malformed_total == 18 + 1  # + the binary garbage frame
    assert session.stats.malformed["not_json"] == 2
    assert session.stats.malformed["bad_event"] == 8
    good_events = [e for line in good for e in json.loads(line)]
    good_events += [e for e in json.loads(bad[-2]) if e.get("i") in ("900", "901")]
    assert len(good_events) == 9 + 2
    consumed = consume_all(config)
    assert Counter(canonical(k, r) for k, r in consumed) == truth(good_events)
    assert publisher.failed == 0


def test_auth_failure_exits_nonzero_with_the_message(kafka_bootstrap: str,
                                                     tmp_path: Path) -> None:
    with SimulatorServer(symbols=SYMBOLS, api_keys=["the-only-good-key"]) as sim:
        config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{sim.port}", tmp_path)
        path = write_config(config, tmp_path / "config.yaml")
        proc = subprocess.run(
            [sys.executable, "-m", "massive_fetcher", "producer", "--config", str(path)],
            env=cli_env(), capture_output=True, text=True, timeout=60)
        conns = sim.connections()
    assert proc.returncode == EXIT_AUTH_FAILED, proc.stderr[-2000:]
    assert "authentication failed" in proc.stderr
    assert KEY not in proc.stderr and KEY not in proc.stdout
    assert len(conns) == 1, "retried a refused key"


def test_broker_down_at_start_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(f"127.0.0.1:{port}", "ws://127.0.0.1:1", tmp_path,
                         kafka_wait_s=2.0)
    path = write_config(config, tmp_path / "config.yaml")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "massive_fetcher", "producer", "--config", str(path)],
        env=cli_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"Kafka at 127.0.0.1:{port} not reachable within 2s" in proc.stderr
    assert time.monotonic() - started < 30


def test_sigterm_flushes_and_loses_nothing(kafka_bootstrap: str, tmp_path: Path,
                                           simulator: SimulatorServer) -> None:
    config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{simulator.port}", tmp_path)
    path = write_config(config, tmp_path / "config.yaml")
    log_path = tmp_path / "producer.log"
    with cli_producer(path, log_path) as proc:
        wait_streaming(simulator, trades=200)
        port = next(json.loads(line)["metrics_port"] for line in log_path.read_text()
                    .splitlines() if '"metrics_port"' in line)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'massive_fetcher_producer_events_total{type="trades"}' in metrics
        assert "massive_fetcher_producer_connected 1.0" in metrics
        simulator.burst(5000)  # a lot in flight when the signal arrives
        lines = stop_cleanly(proc, log_path)
    assert len(simulator.connections()) == 1
    consumed = consume_all(config)
    assert_exactly_once(consumed, simulator.sent_events())
    exit_line = next(x for x in lines if x["msg"] == "producer exiting")
    assert exit_line["delivered"] == len(consumed) and exit_line["failed"] == 0


def test_the_cli_producer_repairs_a_gap_through_a_kafka_producer_of_its_own(
        kafka_bootstrap: str, tmp_path: Path, simulator: SimulatorServer) -> None:
    """The repair's records go through the side publisher ("producer-backfill"), so its
    flush before the "repaired" marker never waits for the live queue; the marker's count
    is what that publisher produced, and the live one produced only the live events."""
    config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{simulator.port}", tmp_path,
                         data_types=("trades", "quotes"), gap_repair=True)
    config = config.replace(massive=dataclasses.replace(config.massive,
                                                         base_url=simulator.url))
    path = write_config(config, tmp_path / "config.yaml")
    gaps_file = Path(config.producer.gaps_file)
    log_path = tmp_path / "producer.log"

    def repaired() -> list[dict[str, Any]]:
        if not gaps_file.exists():
            return []
        return [x for x in map(json.loads, gaps_file.read_text().splitlines())
                if "repaired" in x]

    with cli_producer(path, log_path) as proc:
        wait_streaming(simulator, trades=50)
        time.sleep(0.5)  # a few trades in the window the disconnect opens
        assert simulator.force_disconnect()
        wait_for(lambda: bool(repaired()), timeout_s=60, what="the gap to be repaired")
        lines = stop_cleanly(proc, log_path)
    marker = repaired()[0]
    assert marker["records"] > 0  # ~80+ ms of 240 events/s: the window is never empty
    closed = {x["client_id"]: x for x in lines if x["msg"] == "Kafka publisher closed"}
    assert set(closed) == {"producer", "producer-backfill"}
    assert closed["producer-backfill"]["produced"] == marker["records"]
    assert closed["producer-backfill"]["unacknowledged"] == 0
    live = next(x for x in lines if x["msg"] == "producer exiting")
    assert closed["producer"]["produced"] == sum(live["events"].values())


def test_gives_up_after_max_reconnects_with_backoff(kafka_bootstrap: str,
                                                    tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{port}", tmp_path,
                         max_reconnects=3, reconnect_initial_s=0.05, reconnect_max_s=0.2)
    publisher = Publisher(config)
    session = ProducerSession(config, publisher)
    started = time.monotonic()
    code = asyncio.run(session.run())
    elapsed = time.monotonic() - started
    assert code == EXIT_GAVE_UP
    assert "gave up after 3 reconnection attempts" in session.exit_reason
    assert session.reconnects == 3
    # exponential backoff with equal jitter between the 4 attempts: at least half of
    # 0.05 + 0.1 + 0.2 (capped), i.e. 0.175 s, was waited
    assert elapsed >= 0.17
    assert not session.gaps  # never subscribed: nothing was missed


def test_a_server_that_drops_us_right_after_subscribing_meets_growing_backoff(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Subscribed-then-dropped at once counts as a failed attempt: the delay grows and
    max_reconnects ends it, instead of a reconnect every few hundred milliseconds forever."""
    from websockets.asyncio.server import serve

    connections: list[float] = []

    async def handler(ws: Any) -> None:
        connections.append(time.monotonic())
        await ws.send('[{"ev":"status","status":"connected","message":"Connected Successfully"}]')
        await ws.recv()  # auth
        await ws.send('[{"ev":"status","status":"auth_success","message":"authenticated"}]')
        subscribe = json.loads(await ws.recv())
        for channel in subscribe["params"].split(","):
            await ws.send(json.dumps([{"ev": "status", "status": "success",
                                       "message": f"subscribed to: {channel}"}]))
        await ws.close(1011, "going away")

    async def scenario() -> int:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            config = make_config(kafka_bootstrap, f"ws://127.0.0.1:{port}", tmp_path,
                                 max_reconnects=3, reconnect_initial_s=0.05,
                                 reconnect_max_s=0.4)
            session = ProducerSession(config, Publisher(config))
            return await asyncio.wait_for(session.run(), 30)

    assert asyncio.run(scenario()) == EXIT_GAVE_UP
    assert len(connections) == 4
    waits = [b - a for a, b in itertools.pairwise(connections)]
    assert waits[-1] > waits[0]  # the delay grew
