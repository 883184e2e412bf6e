"""The one write path into Kafka: records -> Avro -> the idempotent producer, keyed by symbol.

Used by the live producer and by backfill/gap repair alike. librdkafka does the batching,
compression and retries on its own threads; this class only adds what the project needs
on top: topic by kind, key = the symbol as its bucket spells it (:mod:`schemas.keys`: one
bucket, one partition), back-pressure instead of loss when the local queue is full,
delivery accounting, and Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.config import Config
from common.kafka import (
    AuthWatch,
    fetch_metadata,
    kafka_error_text,
    refused_as_too_large,
)
from common.metrics import NAMESPACE
from producer.mapping import event_timestamp_ns
from schemas.keys import symbol_key
from schemas.spec import Kind

log = logging.getLogger(__name__)

KINDS: tuple[Kind, ...] = tuple(Kind)

# Defaults tuned for many small records (60-200 bytes); kafka.properties and
# kafka.producer in the config override any of them.
DEFAULT_PRODUCER_PROPERTIES: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # A record waits at most this long for its batch: it is part of the end-to-end latency
    # (WebSocket receipt -> queryable). 5 ms instead of 20 took nothing off bench.producer
    # (batches at its rate fill in less time anyway).
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    # No record is ever dropped by a timeout: while Kafka is unreachable the records wait
    # in the bounded local queue, and once it is nearly full the live session stops
    # reading (if Massive then drops us as a slow consumer, that is an ordinary gap,
    # repaired from REST). A finite value set in the config drops records after it; the
    # session then records their range as a gap and repairs it once Kafka is back.
    "message.timeout.ms": 0,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "message.max.bytes": 2_000_000,
    "sticky.partitioning.linger.ms": 20,
    # A Python callback per acknowledged record costs ~0.4 us on the hot path; failures
    # still get one (counted and logged), successes are counted from the queue instead.
    "delivery.report.only.error": True,
}

# History (backfill, gap repair) has no latency to keep: a longer linger fills each produce
# request with more records, which takes a third off librdkafka's threads' CPU per record
# at one page in flight (bench/backfill/README.md). The config still overrides it.
HISTORY_PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 50}

# While the local queue stays full, say so at most this often.
_BACKPRESSURE_LOG_INTERVAL_S = 5.0
# Delivery failures are logged one by one up to this many, then every Nth.
_FAILURE_LOG_FIRST = 20
_FAILURE_LOG_EVERY = 1000


@dataclasses.dataclass
class FailedRange:
    """Records of one data type that Kafka did not acknowledge: their event-time range,
    their symbols, how many, and the last error."""

    data_type: str
    start_ns: int
    end_ns: int
    symbols: set[str]
    records: int = 0
    error: str = ""

    def add(self, ts_ns: int, symbol: str, error: str) -> None:
        self.start_ns = min(self.start_ns, ts_ns)
        self.end_ns = max(self.end_ns, ts_ns)
        self.symbols.add(symbol)
        self.records += 1
        self.error = error


class PublisherError(RuntimeError):
    """Kafka cannot be used: unreachable at start, or a fatal producer error."""


def producer_properties(config: Config, client_id: str,
                        defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka properties: our defaults (then the caller's, e.g.
    :data:`HISTORY_PRODUCER_DEFAULTS`), then kafka.properties, then kafka.producer."""
    props: dict[str, Any] = dict(DEFAULT_PRODUCER_PROPERTIES)
    props.update(defaults or {})
    props["bootstrap.servers"] = config.kafka.bootstrap_servers
    props["client.id"] = client_id
    props["compression.type"] = config.kafka.compression
    props.update(config.kafka.properties)
    props.update(config.kafka.producer)
    return props


class Publisher:
    """Encodes records with the shared codec and produces them, never dropping one.

    ``publish`` returns once the record is in librdkafka's queue. When that queue is full
    it serves delivery reports and waits (back-pressure) instead of raising or dropping.
    ``delivered``/``failed`` count delivery reports; a failure is a record librdkafka gave
    up on after its own retries (a finite ``message.timeout.ms``, or an error it does not
    retry), and each one is logged and kept, by data type and event time, for
    :meth:`take_failed` (the live session records them as gaps).
    """

    def __init__(self, config: Config, client_id: str = "producer",
                 registry: CollectorRegistry | None = None, codec: Any = None,
                 properties: dict[str, Any] | None = None,
                 defaults: Mapping[str, Any] | None = None) -> None:
        if codec is None:
            from schemas.codec import make_codec
            codec = make_codec(config)
        self._codec = codec
        self._encode: Callable[[str, dict[str, Any]], bytes] = codec.encode
        self._topics: dict[str, str] = {k: config.kafka.topics.for_type(k.data_type) for k in Kind}
        self.client_id = client_id
        self.bootstrap_servers = config.kafka.bootstrap_servers
        props = producer_properties(config, client_id, defaults)
        if properties:
            props.update(properties)
        props["on_delivery"] = self._on_delivery
        props["error_cb"] = self._on_error
        self._auth = AuthWatch(self.bootstrap_servers)
        # librdkafka's own log lines go through logging (JSON, redacted), not raw stderr
        props.setdefault("logger", logging.getLogger(f"librdkafka.{client_id}"))
        self._producer = Producer(props)
        self.max_queue_messages = int(props.get("queue.buffering.max.messages", 100_000))
        self._reports_only_errors = str(props.get("delivery.report.only.error", False)
                                        ).lower() in ("true", "1")
        # Backfill produces from worker threads next to the live loop: counters are
        # updated under a lock so no increment is lost.
        self._count_lock = threading.Lock()
        self.produced = 0
        self._acknowledged = 0  # success reports (when librdkafka sends them)
        self.failed = 0
        self.backpressure_waits = 0
        self.backpressure_seconds = 0.0
        self.produced_by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.fatal_error: str | None = None
        self.last_error: str | None = None
        # Failed deliveries by data type, until the session takes them as gaps.
        self._failed_ranges: dict[str, FailedRange] = {}
        self._type_of_topic = {self._topics[k]: k.data_type for k in Kind}
        self._last_backpressure_log = 0.0
        if registry is not None:
            registry.register(_PublisherCollector(self))

    # -- producing ---------------------------------------------------------------------

    def topic_for(self, kind: str) -> str:
        return self._topics[kind]

    def publish(self, kind: str, record: dict[str, Any]) -> None:
        """Encode ``record`` and queue it on the topic of ``kind``, keyed by its symbol."""
        self.produce_encoded(kind, record["symbol"], self._encode(kind, record))

    def produce_encoded(self, kind: str, symbol: str, value: bytes) -> None:
        """Queue an already encoded record; waits while the local queue is full."""
        self._produce_all(((self._topics[kind], value, symbol_key(symbol)),))
        self._count(1, {kind: 1})

    def produce_many(self, items: list[tuple[str, str, bytes]]) -> None:
        """``produce_encoded`` for a list of (kind, symbol, value): one call per frame or
        chunk instead of one per record."""
        topics = self._topics
        self._produce_all((topics[kind], value, symbol_key(symbol))
                          for kind, symbol, value in items)
        by_kind = dict.fromkeys(topics, 0)
        for kind, _symbol, _value in items:
            by_kind[kind] += 1
        self._count(len(items), by_kind)

    def produce_values(self, kind: str, symbol: str, values: list[bytes]) -> None:
        """``produce_many`` for values of one kind and one symbol (a REST page's records,
        encoded by the compiled page encoder)."""
        self._produce_all(zip(repeat(self._topics[kind]), values, repeat(symbol_key(symbol))))
        self._count(len(values), {kind: len(values)})

    def produce_routed(self, records: list[tuple[str, bytes, str]],
                       by_kind: Mapping[str, int]) -> None:
        """``produce_many`` for records already routed to their topic and keyed: (topic,
        value, key), as the native frame encoder returns them (the live hot path; its keys
        are :func:`schemas.keys.symbol_key`'s, checked at start), with their counts by kind."""
        self._produce_all(records)
        self._count(len(records), by_kind)

    def _produce_all(self, records: Iterable[tuple[str, bytes, str]]) -> None:
        """Queue (topic, value, key) records: waits while the local queue is full, counts
        and skips a record librdkafka refuses as too large."""
        produce = self._producer.produce
        for topic, value, symbol in records:
            try:
                produce(topic, value, symbol)
            except BufferError:
                self._wait_for_room(topic, value, symbol)
            except KafkaException as exc:
                self._refused(topic, symbol, value, exc)

    def _count(self, produced: int, by_kind: Mapping[str, int]) -> None:
        with self._count_lock:
            self.produced += produced
            for kind, n in by_kind.items():
                self.produced_by_kind[kind] += n

    def _refused(self, topic: str, key: str, value: bytes, exc: KafkaException) -> None:
        """librdkafka refused one record outright. A record too large for
        ``message.max.bytes`` is bad input (a huge event): it is counted and logged like a
        failed delivery, so the rest of the frame or page and the stream carry on. Any
        other refusal means the producer itself is unusable and is raised."""
        if not refused_as_too_large(exc):
            raise exc
        err = kafka_error_text(exc)
        with self._count_lock:
            self.failed += 1
        self.last_error = err
        if self.failed <= _FAILURE_LOG_FIRST or self.failed % _FAILURE_LOG_EVERY == 0:
            log.error("Kafka refused a record larger than message.max.bytes; skipped",
                      extra={"topic": topic, "key": key, "bytes": len(value),
                             "error": err, "failed_total": self.failed})

    def _wait_for_room(self, topic: str, value: bytes, key: str) -> None:
        started = time.monotonic()
        self.backpressure_waits += 1
        while True:
            self._producer.poll(0.05)
            if self.fatal_error:
                raise PublisherError(f"Kafka producer failed: {self.fatal_error}")
            try:
                self._producer.produce(topic, value, key)
                break
            except BufferError:
                self._log_backpressure("Kafka local queue full; waiting for deliveries "
                                       "(back-pressure, nothing is dropped)", started)
        self.backpressure_seconds += time.monotonic() - started

    def _log_backpressure(self, message: str, started: float) -> None:
        """``message`` at most once per interval while a wait lasts."""
        now = time.monotonic()
        if now - self._last_backpressure_log >= _BACKPRESSURE_LOG_INTERVAL_S:
            self._last_backpressure_log = now
            log.warning(message, extra={"queue_depth": len(self._producer),
                                        "waiting_s": round(now - started, 3),
                                        "last_error": self.last_error})

    async def wait_for_room(self, high: float = 0.8, low: float = 0.5,
                            stop: asyncio.Event | None = None) -> float:
        """For asyncio callers: while the local queue is above ``high`` x its capacity,
        serve deliveries and sleep (never blocking the event loop) until it is below
        ``low`` x capacity, or until ``stop`` is set (a stop must not wait for a Kafka
        outage to end; what is queued is then up to the final flush). Returns the seconds
        waited (0.0 when there was room)."""
        limit = self.max_queue_messages
        if len(self._producer) < high * limit:
            return 0.0
        started = time.monotonic()
        self.backpressure_waits += 1
        target = low * limit
        while len(self._producer) > target:
            if stop is not None and stop.is_set():
                break
            self._producer.poll(0)
            if self.fatal_error:
                raise PublisherError(f"Kafka producer failed: {self.fatal_error}")
            self._log_backpressure("Kafka local queue nearly full; pausing reads until it "
                                   "drains (back-pressure, nothing is dropped)", started)
            await asyncio.sleep(0.01)
        waited = time.monotonic() - started
        self.backpressure_seconds += waited
        return waited

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self._producer.poll(timeout)

    def drain(self, timeout_s: float) -> int:
        """Send what lingers now and wait up to ``timeout_s`` for Kafka's acknowledgements;
        returns how many are still outstanding. Unlike :meth:`flush`, not reaching zero is
        an ordinary answer (a slow broker), not logged."""
        return self._producer.flush(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        remaining = self.drain(timeout_s)
        if remaining:
            log.error("Kafka flush timed out with records still unacknowledged",
                      extra={"remaining": remaining, "timeout_s": timeout_s,
                             "last_error": self.last_error})
        return remaining

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush, then report what was produced; the producer is unusable afterwards."""
        remaining = self.flush(timeout_s)
        log.info("Kafka publisher closed",
                 extra={"client_id": self.client_id, "produced": self.produced,
                        "delivered": self.delivered, "failed": self.failed,
                        "unacknowledged": remaining})
        return remaining

    @property
    def queue_depth(self) -> int:
        """Records (and requests) waiting in librdkafka: queued, in flight, or unreported."""
        return len(self._producer)

    def wait_until_reachable(self, timeout_s: float) -> None:
        """Fetch cluster metadata or raise :class:`PublisherError` naming the servers
        (``common.kafka.KafkaAuthError`` at once when the broker refuses the client)."""
        try:
            fetch_metadata(self._producer, self._auth, timeout_s)
        except KafkaException as exc:
            raise PublisherError(
                f"Kafka at {self.bootstrap_servers} not reachable within {timeout_s:g}s "
                f"({kafka_error_text(exc)})") from None

    # -- librdkafka callbacks (run inside poll/flush on the calling thread) -------------

    @property
    def delivered(self) -> int:
        """Records Kafka acknowledged. Without success reports: everything produced that
        neither failed nor is still in librdkafka's queue (exact once flush() returned 0)."""
        if self._reports_only_errors:
            return max(0, self.produced - self.failed - len(self._producer))
        return self._acknowledged

    @property
    def failures_pending(self) -> bool:
        """Some delivery failure has not been taken by :meth:`take_failed` yet."""
        return bool(self._failed_ranges)

    def take_failed(self) -> list[FailedRange]:
        """The failed deliveries since the last call, one range per data type."""
        with self._count_lock:
            ranges, self._failed_ranges = list(self._failed_ranges.values()), {}
        return ranges

    def _note_failed(self, msg: Any, error: str) -> None:
        """Which record failed, by event time: the value is decoded (failures are rare);
        a value that does not decode is placed at its Kafka timestamp (produce time)."""
        try:
            kind, record = self._codec.decode(msg.value())
            data_type = Kind.of(kind).data_type
            ts_ns, symbol = event_timestamp_ns(kind, record), str(record["symbol"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            log.error("a record Kafka did not acknowledge does not decode; its produce time "
                      "stands for its event time", extra={"error": str(exc)})
            key = msg.key()
            data_type = self._type_of_topic.get(msg.topic(), "trades")
            ts_ns = msg.timestamp()[1] * 1_000_000
            symbol = key.decode("utf-8", "replace") if key else ""
        with self._count_lock:
            failed = self._failed_ranges.get(data_type)
            if failed is None:
                failed = self._failed_ranges[data_type] = FailedRange(
                    data_type, ts_ns, ts_ns, set())
            failed.add(ts_ns, symbol, error)

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            with self._count_lock:
                self._acknowledged += 1
            return
        with self._count_lock:
            self.failed += 1
        self.last_error = err.str()
        # A record over the size limit is bad input (REST would bring the same record
        # back): counted and logged like the refusals in _refused, not a gap.
        if err.code() != KafkaError.MSG_SIZE_TOO_LARGE:
            self._note_failed(msg, err.str())
        if self.failed <= _FAILURE_LOG_FIRST or self.failed % _FAILURE_LOG_EVERY == 0:
            key = msg.key()
            log.error("Kafka delivery failed after retries",
                      extra={"topic": msg.topic(), "key": key.decode("utf-8", "replace")
                             if key else None, "error": err.str(),
                             "failed_total": self.failed})

    def _on_error(self, err: KafkaError) -> None:
        self.last_error = err.str()
        if self._auth(err):
            # librdkafka would retry for ever with the same credentials
            if self.fatal_error is None:
                log.critical("Kafka refused the producer", extra={"error": err.str()})
            self.fatal_error = self._auth.failure
        elif err.fatal():
            self.fatal_error = err.str()
            log.critical("Kafka producer fatal error", extra={"error": err.str()})
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            log.warning("all Kafka brokers down; librdkafka keeps retrying",
                        extra={"bootstrap_servers": self.bootstrap_servers})
        else:
            log.warning("Kafka client error", extra={"error": err.str()})


class _PublisherCollector(Collector):
    """Reads the publisher's plain counters at scrape time (no per-record metric calls)."""

    def __init__(self, pub: Publisher) -> None:
        self._pub = pub

    def collect(self) -> Any:
        p, pre, client = self._pub, f"{NAMESPACE}_kafka", [self._pub.client_id]
        produced = CounterMetricFamily(f"{pre}_produced", "Records queued for Kafka",
                                       labels=["client_id", "kind"])
        for kind, n in p.produced_by_kind.items():
            produced.add_metric([*client, kind], n)
        yield produced
        families = (
            (CounterMetricFamily, "delivered", "Records acknowledged by Kafka", p.delivered),
            (CounterMetricFamily, "delivery_failed", "Records Kafka did not acknowledge after "
             "retries (produce errors)", p.failed),
            (CounterMetricFamily, "backpressure_waits", "Times the local queue was full and "
             "publishing waited", p.backpressure_waits),
            (CounterMetricFamily, "backpressure_seconds", "Time spent waiting for room in the "
             "local queue", p.backpressure_seconds),
            (GaugeMetricFamily, "queue_depth", "Messages in librdkafka's local queue "
             "(len(producer))", p.queue_depth),
        )
        for family, name, doc, value in families:
            metric = family(f"{pre}_{name}", doc, labels=["client_id"])
            metric.add_metric(client, value)
            yield metric
