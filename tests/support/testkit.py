"""Helpers for the consumer's tests and benchmarks (records, publishing, reading buckets back).

Outside the installed packages: the tests and ``bench`` import it from the source tree.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer
from numpy.lib import recfunctions as rfn

from common.config import Config, ConsumerConfig, KafkaConfig, MarketStoreConfig, TopicsConfig
from common.timeframes import parse_timeframe
from consumer import buckets
from consumer.dedupe import first_occurrences
from consumer.writer import MarketStoreWriter
from schemas.codec import make_codec
from schemas.spec import Kind
from schemas.topics import ensure_topics
from tests.support.configfile import write_config_file

_ROOT = Path(__file__).resolve().parents[2]

BASE_NS = 1_764_000_000 * 1_000_000_000  # 2025-11-24T16:00:00Z


def unique(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def make_config(bootstrap: str, marketstore_url: str, name: str | None = None,
                partitions: int = 3, **consumer: object) -> Config:
    """A Config with topics and a group of its own (isolation on shared servers)."""
    name = name or unique("t").lower()
    topics = TopicsConfig(bars=f"{name}.bars", trades=f"{name}.trades",
                          quotes=f"{name}.quotes", dead_letter=f"{name}.dead-letter")
    base = Config()
    cons = dataclasses.replace(ConsumerConfig(group_id=f"{name}-group", batch_max_ms=100,
                                              commit_delay_ms=300, retry_initial_s=0.2,
                                              retry_max_s=1.0), **consumer)
    return base.replace(
        kafka=KafkaConfig(bootstrap_servers=bootstrap, topics=topics, partitions=partitions,
                          consumer={"session.timeout.ms": 6000,
                                    "heartbeat.interval.ms": 500}),
        marketstore=MarketStoreConfig(url=marketstore_url, timeout_s=10.0),
        consumer=cons,
        metrics=dataclasses.replace(base.metrics, enabled=False),
        source=f"<test {name}>")


def create_topics(config: Config) -> None:
    ensure_topics(config)


def trade(symbol: str, seq: int, ts_ns: int, **kw: object) -> dict:
    record = {
        "symbol": symbol, "sip_timestamp_ns": ts_ns, "participant_timestamp_ns": None,
        "trf_timestamp_ns": None, "price": 100.0 + (seq % 100) / 100, "size": 10.0 + seq % 7,
        "exchange": 4, "tape": 3, "conditions": [14, 41] if seq % 3 else [], "id": str(seq),
        "sequence_number": seq, "trf_id": None, "correction": None, "source": "live",
        "received_ns": None,
    }
    record.update(kw)
    return record


def quote(symbol: str, seq: int, ts_ns: int, **kw: object) -> dict:
    record = {
        "symbol": symbol, "sip_timestamp_ns": ts_ns, "participant_timestamp_ns": None,
        "trf_timestamp_ns": None, "bid_price": 99.5 + (seq % 50) / 100, "bid_size": 100.0,
        "bid_exchange": 11, "ask_price": 100.5 + (seq % 50) / 100, "ask_size": 200.5,
        "ask_exchange": 12, "conditions": [1], "indicators": [] if seq % 2 else [604],
        "sequence_number": seq, "tape": 3, "source": "live", "received_ns": None,
    }
    record.update(kw)
    return record


def bar(symbol: str, start_ns: int, timeframe: str = "1Min", **kw: object) -> dict:
    width = parse_timeframe(timeframe).seconds * 1_000_000_000
    i = start_ns // width
    record = {
        "symbol": symbol, "timeframe": timeframe, "start_ns": start_ns,
        "end_ns": start_ns + width, "open": 10.0 + i % 5, "high": 12.0 + i % 5,
        "low": 9.0 + i % 5, "close": 11.0 + i % 5, "volume": 1000.5 + i % 11, "vwap": 10.7,
        "trades": 42, "accumulated_volume": None, "official_open": None, "day_vwap": None,
        "average_trade_size": None, "otc": False, "source": "live", "received_ns": None,
    }
    record.update(kw)
    return record


def trades_stream(symbol: str, n: int, start_ns: int = BASE_NS, step_ns: int = 7_000_000,
                  first_seq: int = 1) -> list[dict]:
    return [trade(symbol, first_seq + i, start_ns + i * step_ns) for i in range(n)]


def quotes_stream(symbol: str, n: int, start_ns: int = BASE_NS, step_ns: int = 11_000_000,
                  first_seq: int = 1) -> list[dict]:
    return [quote(symbol, first_seq + i, start_ns + i * step_ns) for i in range(n)]


def publish(config: Config, records: Iterable[tuple[str, dict]],
            raw: Iterable[tuple[str, bytes, bytes]] = ()) -> int:
    """Publish records (kind, record) with the codec, key = symbol; plus raw (topic, key, value)."""
    codec = make_codec(config)
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers,
                         "enable.idempotence": True, "linger.ms": 5})
    topics = config.kafka.topics
    n = 0
    for kind, record in records:
        topic = topics.for_type(Kind.of(kind).data_type)
        while True:
            try:
                producer.produce(topic, key=record["symbol"].encode(),
                                 value=codec.encode(kind, record))
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
    for topic, key, value in raw:
        producer.produce(topic, key=key, value=value)
        n += 1
    if producer.flush(30):
        raise RuntimeError("publish: messages not delivered")
    return n


def read_bucket(url: str, tbk: str) -> np.ndarray | None:
    """Every row of ``tbk`` (None: no such bucket); a torn read is read again by the writer
    (:mod:`consumer.tornread`), so tests may read while the consumer writes."""
    writer = MarketStoreWriter(url)
    try:
        rows = writer.query([tbk]).get(tbk)
    finally:
        writer.close()
    if rows is None:
        return None
    return buckets.aligned(rows, buckets.DTYPES[buckets.attr_group(tbk)])


def expected_buckets(records: Iterable[tuple[str, dict]]) -> dict[str, np.ndarray]:
    """What MarketStore must hold for these records, in offset order (the consumer's rules)."""
    rows: dict[str, list[tuple]] = {}
    for kind, record in records:
        try:
            tbk, row = buckets.to_row(kind, record)
        except buckets.RecordError:
            continue
        rows.setdefault(tbk, []).append(row)
    out = {}
    for tbk, r in rows.items():
        attr = buckets.attr_group(tbk)
        a = buckets.rows_to_array(attr, r)
        if buckets.VARIABLE[attr]:
            a = a[first_occurrences(a["SipTimestamp"], a["SequenceNumber"])]
        out[tbk] = buckets.sort_rows(attr, a)
    return out


def comparable(tbk: str, array: np.ndarray) -> np.ndarray:
    """Rows in a canonical order, without the columns MarketStore derives lossily."""
    attr = buckets.attr_group(tbk)
    if buckets.VARIABLE[attr]:
        names = [n for n in array.dtype.names if n not in ("Epoch", "Nanoseconds")]
        out = rfn.repack_fields(array[names])
        return np.sort(out, order=["SipTimestamp", "SequenceNumber"])
    return np.sort(array, order=["Epoch"])


def assert_buckets_equal(url: str, expected: dict[str, np.ndarray]) -> None:
    for tbk, want in expected.items():
        got = read_bucket(url, tbk)
        assert got is not None, f"{tbk}: bucket missing"
        g, w = comparable(tbk, got), comparable(tbk, want)
        assert len(g) == len(w), f"{tbk}: {len(g)} rows stored, {len(w)} expected"
        for i, (a, b) in enumerate(zip(g.tolist(), w.tolist(), strict=True)):
            assert _same(a, b), f"{tbk} row {i}: stored {a} expected {b}"


def _same(a: tuple, b: tuple) -> bool:
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)
               for x, y in zip(a, b, strict=True))


def row_count(url: str, tbk: str) -> int:
    rows = read_bucket(url, tbk)
    return 0 if rows is None else len(rows)


class ThreadedConsumer:
    """A ConsumerService on a thread (in-process tests); ``stop()`` flushes and commits."""

    def __init__(self, config: Config, **options: object) -> None:
        from consumer.service import ConsumerService, Options

        opts = Options(group_id=str(options.pop("group_id", config.consumer.group_id)),
                       **options)  # type: ignore[arg-type]
        self.service = ConsumerService(config, opts)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.service.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ThreadedConsumer:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.service.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "consumer thread did not stop"
        if self.error is not None:
            raise self.error

    def __enter__(self) -> ThreadedConsumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def consumer_process(config_path: Path, name: str, log_path: Path) -> subprocess.Popen:
    """``massive-fetcher consumer`` as a child process logging DEBUG JSON lines to log_path."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "massive_fetcher", "consumer", "--config", str(config_path),
         "--log-level", "DEBUG", "--client-id", name],
        cwd=_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("ab"))


def stop_processes(procs: Iterable[subprocess.Popen]) -> None:
    """SIGTERM every process still running (they flush and commit), then wait; SIGKILL one
    that has not exited within 30 s."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# bench/scaling imports it by this name
write_config = write_config_file


Span = tuple[float, float, str]  # (start, end, member)


def log_events(path: Path, missing_ok: bool = False) -> list[dict]:
    """The JSON objects of a JSON-lines log (other lines skipped)."""
    out: list[dict] = []
    if missing_ok and not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def overlapping_spans(spans: dict[str, list[Span]]) -> list[tuple[str, str, float, str, float]]:
    """Per key, spans of two different members that overlap in time: (key, earlier member,
    the time its span ends, later member, the time its span starts)."""
    found = []
    for key, items in spans.items():
        items = sorted(items)
        end, owner = items[0][1], items[0][2]
        for start, stop, member in items[1:]:
            if member != owner and start < end:
                found.append((key, owner, end, member, start))
            if stop > end:
                end, owner = stop, member
    return found


def ownership_violations(logs: dict[str, Path]) -> list[str]:
    """Partitions written by two members at overlapping times (from the DEBUG batch log)."""
    spans: dict[str, list[Span]] = {}
    for member, path in logs.items():
        for event in log_events(path):
            if event.get("msg") == "batch written" and event.get("rows"):
                for part in event["partitions"]:
                    spans.setdefault(part, []).append(
                        (event["t_start"], event["t_end"], member))
    return [f"{part}: {owner} and {member} at {start}"
            for part, owner, _end, member, start in overlapping_spans(spans)]


def consume_into_marketstore(config: Config) -> None:
    """Run the consumer until it has caught up with the topics (then it stops)."""
    with ThreadedConsumer(config, until_caught_up=True) as consumer:
        consumer.thread.join(120)
        assert not consumer.thread.is_alive(), "the consumer did not catch up"


