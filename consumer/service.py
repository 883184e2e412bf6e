"""The consumer group loop: Kafka -> decode -> MarketStore sink -> delayed, verified commits.

Checkpointing follows quix-streams' shape: every record is ``add()``-ed to the sink, the sink is
``flush()``-ed at the end of a batch (``consumer.batch_max_events`` or ``batch_max_ms``), and
offsets are committed only after every flush succeeded: here additionally only once the write
is older than ``consumer.commit_delay_ms`` and one written row reads back (durable in
MarketStore, see ``consumer.writer``). Any MarketStore error (or a dead-letter delivery
failure) aborts the checkpoint: the assigned partitions are paused and rewound to their last
committed offsets, the unflushed batch and every cached tail are dropped, and the loop backs
off (``retry_initial_s`` doubling to ``retry_max_s``) while still serving the group protocol,
probes MarketStore, repairs buckets MarketStore's WAL replay may have duplicated, and resumes.
Nothing is committed and nothing spins meanwhile. A failure that belongs to one bucket
(``consumer.sink.BucketError``) counts against that bucket once the server is seen to answer;
a bucket that can never be written, or that failed ``consumer.bucket_max_attempts`` times in
a row, is quarantined (a metric and one log line): its records go to the dead-letter topic
(reason ``bucket``) and every other bucket flows again. Writes run on one writer thread, pipelined
one batch deep (Kafka polling and decoding of the next batch overlap the current write; writes
stay strictly ordered).

Poison messages (undecodable, unknown schema, invalid values, unkeyable symbol) go to the
dead-letter topic with the original key and value and headers ``error``, ``error.class``,
``source.topic``, ``source.partition``, ``source.offset``, ``source.timestamp``; they are
counted and consumption goes on. The dead-letter producer is flushed before the offsets that
cover those messages are committed.

Rebalances (cooperative-sticky): revoked partitions are flushed and committed before they are
given up, and the sink forgets their buckets' tails; assigned ones load their tails lazily.
SIGTERM/SIGINT: flush, commit, close (leaves the group at once).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.config import Config
from common.deadletter import dead_letter_headers, dead_letter_properties, produce_dead_letter
from common.kafka import AuthWatch, worth_asking_again
from common.metrics import NAMESPACE, new_registry
from consumer import columns
from consumer.batching import AdaptiveBatching
from consumer.buckets import ATTR_GROUP, RecordError, bucket_symbol
from consumer.dedupe import take_rows
from consumer.sink import BucketError, FlushResult, MarketStoreSink, Probe, QuarantinedError
from consumer.writer import MarketStoreError, MarketStoreWriter, ServerWatch
from schemas.batch import decode_messages
from schemas.codec import DATA_TYPE_OF_KIND, DecodeError, RegistryError, make_codec

log = logging.getLogger(__name__)

TP = tuple[str, int]
# Offsets are committed at most this often in steady state (a synchronous commit is a broker
# round trip; doing it per 20 ms batch would add that to every event's latency). Rebalances
# and shutdown commit at once.
COMMIT_INTERVAL_S = 1.0
# Fetch in chunks of up to 10 ms instead of one fetch per produce request: with librdkafka's
# defaults (fetch.min.bytes 1) the broker answered every few hundred bytes, which cost it 0.45
# of a core at 50k events/s on a 2-core machine and made its p99 fetch latency 20-40 ms; with
# these, 0.3 of a core and 11-19 ms (kafka.consumer in the config overrides them).
FETCH_DEFAULTS: dict[str, object] = {"fetch.min.bytes": 65536, "fetch.wait.max.ms": 10}
MAX_LATENCY_SAMPLES = 1_000_000  # receive-time latencies kept for the bench (8 MB)


class DeadLetterError(Exception):
    """The dead-letter topic did not take a message: retry the batch, commit nothing."""


@dataclass
class PendingCommit:
    written_at: float
    offsets: dict[TP, int]
    probe: Probe | None


@dataclass
class Options:
    """What differs between ``consumer`` and ``replay``."""

    group_id: str
    data_types: tuple[str, ...] = ("bars", "trades", "quotes")
    symbols: frozenset[str] | None = None  # None: every symbol
    start_timestamp_ms: int | None = None  # fresh group only: start here, not at the earliest
    until_caught_up: bool = False
    client_id: str = "massive-fetcher-consumer"
    extra: dict[str, object] = field(default_factory=dict)


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter("consumer_events_written",
                               "Rows written to MarketStore, by data type", ["type"],
                               namespace=NAMESPACE, registry=registry)
        self.duplicates = Counter("consumer_duplicates_dropped",
                                  "Trades/quotes not written because MarketStore held them",
                                  namespace=NAMESPACE, registry=registry)
        self.batch = Histogram("consumer_batch_events", "Events per flushed batch",
                               buckets=(1, 10, 100, 1000, 5000, 10000, 25000, 50000, 100000),
                               namespace=NAMESPACE, registry=registry)
        self.write_latency = Histogram("consumer_write_seconds",
                                       "Time to flush one batch to MarketStore",
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                       namespace=NAMESPACE, registry=registry)
        self.e2e = Histogram("consumer_end_to_end_seconds",
                             "Producer receipt to queryable in MarketStore (sampled)",
                             buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                             namespace=NAMESPACE, registry=registry)
        self.lag = Gauge("consumer_lag", "High watermark minus position",
                         ["topic", "partition"], namespace=NAMESPACE, registry=registry)
        self.dead_letter = Counter("consumer_dead_letter",
                                   "Messages sent to the dead-letter topic", ["reason"],
                                   namespace=NAMESPACE, registry=registry)
        self.store_errors = Counter("consumer_marketstore_errors",
                                    "MarketStore failures (each one rewinds and backs off)",
                                    namespace=NAMESPACE, registry=registry)
        self.commits = Counter("consumer_commits", "Offset commits",
                               namespace=NAMESPACE, registry=registry)
        self.repairs = Counter("consumer_bucket_repairs",
                               "Buckets rebuilt after MarketStore duplicated rows on replay",
                               namespace=NAMESPACE, registry=registry)
        self.bucket_failures = Counter("consumer_bucket_failures",
                                       "Failures of one bucket's reads or writes while "
                                       "MarketStore answered", namespace=NAMESPACE,
                                       registry=registry)
        self.quarantined = Counter("consumer_buckets_quarantined",
                                   "Buckets isolated: their records go to the dead-letter topic",
                                   namespace=NAMESPACE, registry=registry)
        self.rows_read = Counter("consumer_dedupe_rows_read",
                                 "Stored rows read back to deduplicate trades and quotes",
                                 namespace=NAMESPACE, registry=registry)


class ConsumerService:
    def __init__(self, config: Config, options: Options,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.options = options
        self.registry = registry or new_registry()
        self.metrics = ConsumerMetrics(self.registry)
        self.codec = make_codec(config)
        self.writer = MarketStoreWriter(config.marketstore.url, config.marketstore.timeout_s)
        # the sink writes on the writer thread: its own HTTP session
        self.sink = MarketStoreSink(MarketStoreWriter(config.marketstore.url,
                                                      config.marketstore.timeout_s),
                                    bucket_max_attempts=config.consumer.bucket_max_attempts)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="marketstore-writer")
        # the commit's read-back (``self.writer``'s session; never used by two threads at once)
        self._verify_executor = ThreadPoolExecutor(1, thread_name_prefix="marketstore-verify")
        self._verifying: tuple[Future[bool], list[PendingCommit], Probe] | None = None
        # the write on the writer thread: (its future, offsets, receive times, started)
        self._inflight: tuple[Future[FlushResult], dict[TP, int], list[np.ndarray],
                              float] | None = None
        self.watch = ServerWatch(config.marketstore.url)
        self.fast_path = True  # columnar decode (schemas.batch); False: per-record reference
        topics = config.kafka.topics
        self.topics = [topics.for_type(t) for t in options.data_types]
        self._stop = threading.Event()
        self._pending: deque[PendingCommit] = deque()
        self._batch_offsets: dict[TP, int] = {}
        self._batch_received: list[np.ndarray] = []  # received_ns of the batch's rows
        self._batch_started: float | None = None
        self._poll_started = 0.0  # when the current poll began (a batch's age counts from it)
        self._paused_since: float | None = None
        self._backoff = config.consumer.retry_initial_s
        self._assigned: set[TP] = set()
        self._suspect: BucketError | None = None  # the failure that paused, if one bucket's
        self._dlq_failed = 0
        self.dead_letters = 0
        self.consumer: Consumer | None = None
        self.dlq: Producer | None = None
        self.last_flush: FlushResult | None = None
        self.latencies_ns: deque[np.ndarray] = deque()  # e2e samples (bench), bounded
        self._latency_samples = 0
        self._end_offsets: dict[TP, int] | None = None
        # a wrong password or CA ends the run (KafkaAuthError) instead of a silent retry loop
        self._auth = AuthWatch(config.kafka.bootstrap_servers)
        self._last_commit = 0.0
        # --until-caught-up progress: where each partition started and what was committed
        self._start_offsets: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self.on_written: Callable[[FlushResult], None] | None = None  # hook (bench)
        c = config.consumer
        self.batching = AdaptiveBatching(c.batch_max_ms, c.batch_write_ratio,
                                         c.batch_adaptive_max_ms)

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def health(self) -> tuple[bool, str]:
        if self._paused_since is not None and time.monotonic() - self._paused_since > 60:
            return False, "MarketStore unavailable for more than 60 s\n"
        return True, "ok\n"

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def _kafka_conf(self) -> dict[str, object]:
        k = self.config.kafka
        return {"bootstrap.servers": k.bootstrap_servers, **k.properties}

    def open(self) -> None:
        conf = {
            **self._kafka_conf(),
            "group.id": self.options.group_id,
            "client.id": self.options.client_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "error_cb": self._auth,
            **FETCH_DEFAULTS,
            **self.config.kafka.consumer,
            **self.options.extra,
        }
        self.consumer = Consumer(conf, logger=logging.getLogger("librdkafka.consumer"))
        self.dlq = Producer(dead_letter_properties(self.config,
                                                   f"{self.options.client_id}-dlq"))
        if self.options.start_timestamp_ms is not None:
            self._seed_group_offsets(self.options.start_timestamp_ms)
        if self.options.until_caught_up:
            self._end_offsets = self._high_watermarks()
        self.consumer.subscribe(self.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)

    def run(self) -> int:
        max_events = self.config.consumer.batch_max_events
        last_caught_up_check = 0.0
        try:
            if self.consumer is None:
                self.open()  # inside the try: a half-opened service is closed too
            assert self.consumer is not None
            while not self._stop.is_set():
                max_s = self.batching.max_age_s()
                self._auth.check()
                if self._paused_since is not None:
                    self._recover()
                    continue
                if self.watch.restarted():
                    self._fail(MarketStoreError("MarketStore restarted (connection closed)"))
                    continue
                if self._inflight is not None and self._batch_due(max_events, max_s):
                    # The batch is ready but the writer is busy: wait for the write itself
                    # (not a poll timeout), then take what Kafka fetched meanwhile into it.
                    if not self._wait_inflight(max_s):
                        continue
                    if self._paused_since is not None:
                        continue
                    timeout = 0.0
                elif self._batch_started is not None:
                    timeout = max(0.0, self._batch_started + max_s - time.monotonic())
                else:
                    timeout = max_s
                room = max_events - self.sink.pending
                if room > 0 and not self._poll(min(room, 100_000), timeout):
                    continue
                self._complete_inflight(block=False)
                if self._paused_since is not None:
                    continue
                if self._inflight is None and self._batch_due(max_events, max_s):
                    self._checkpoint()
                self._maybe_commit()
                if self._end_offsets is not None and time.monotonic() - last_caught_up_check > 1:
                    last_caught_up_check = time.monotonic()
                    if self._caught_up():
                        log.info("caught up with the end offsets taken at start")
                        break
            self._shutdown_flush()
        finally:
            self.close()
        return 0

    def _batch_due(self, max_events: int, max_s: float) -> bool:
        """The batch holds something and is full or ``batch_max_ms`` old."""
        return bool(self._batch_offsets) and (
            self.sink.pending >= max_events
            or time.monotonic() - (self._batch_started or 0) >= max_s)

    def _poll(self, room: int, timeout: float) -> bool:
        """Consume and decode one poll into the batch; False when the loop must start over.

        A batch's age counts from the start of the poll that brought its first message (that
        message may have waited in librdkafka's queue for the whole poll), so
        ``batch_max_ms`` bounds the time from fetched to handed to the writer.
        """
        assert self.consumer is not None
        self._poll_started = time.monotonic()
        msgs = self.consumer.consume(num_messages=room, timeout=timeout)
        if self._paused_since is not None:
            return False  # an error in a callback: these are re-read after the rewind
        try:
            self._handle_many(msgs)
        except (RegistryError, DeadLetterError) as exc:
            # The registry or the dead-letter topic being unusable says nothing about the
            # message: retry it like a MarketStore outage instead of losing or crashing.
            self._fail(exc)
            return False
        return True

    def _wait_inflight(self, cap_s: float) -> bool:
        """Wait (at most about a second at a time, to keep stop and callbacks responsive)
        for the write in flight; True once it is accounted for."""
        assert self._inflight is not None
        future = self._inflight[0]
        deadline = time.monotonic() + max(cap_s, 1.0)
        while not future.done():
            with contextlib.suppress(TimeoutError):
                future.exception(timeout=max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline or self._stop.is_set():
                break
        return future.done() and self._complete_inflight(block=True)

    def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()
            self.consumer = None
        if self.dlq is not None:
            self.dlq.flush(5)
            self.dlq = None
        self.watch.close()
        self._executor.shutdown(wait=True)
        self._abandon_verify()
        self._verify_executor.shutdown(wait=True)
        self.writer.close()
        self.sink.writer.close()

    def _shutdown_flush(self) -> None:
        if self._paused_since is not None:
            return
        try:
            ok = self._checkpoint(wait=True) if self._batch_offsets else \
                self._complete_inflight(block=True)
            if ok:
                self._maybe_commit(wait=True)
        except (MarketStoreError, DeadLetterError, KafkaException) as exc:
            log.warning("final flush failed; uncommitted events will be re-read",
                        extra={"error": str(exc)})

    # --- per poll ----------------------------------------------------------------------------
    def _handle_many(self, msgs: list[Message]) -> None:
        """Decode a poll column-wise and hand valid rows to the sink in bulk.

        Rows the vectorised checks flag, messages in another writer schema and undecodable
        ones take the per-message path (:meth:`_handle`), which dead-letters with the reason.
        """
        if not self.fast_path:
            for msg in msgs:
                self._handle(msg)
            return
        # the common poll (no error message) is gathered and decoded in C
        fast = decode_messages(self.codec, msgs)
        if fast is not None:
            good = msgs
            result, last = fast
        else:
            good = [m for m in msgs if m.error() is None]
            if len(good) != len(msgs):
                for msg in msgs:
                    err = msg.error()
                    if err is not None and err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error", extra={"error": str(err)})
            if not good:
                return
            # the last message per partition wins in a dict: its offset + 1 is to commit
            last = dict(map(_position, good))
            result = self.codec.decode_batch([m.value() or b"" for m in good])
        for tp, offset in last.items():
            self._batch_offsets[tp] = offset + 1
        if self._batch_started is None:
            self._batch_started = self._poll_started or time.monotonic()
        slow = sorted([i for i, _ in result.errors] + [i for i, _k, _r in result.records])
        for kind, cols in result.columns.items():
            if DATA_TYPE_OF_KIND[kind] not in self.options.data_types:
                continue
            index = result.rows[kind]
            rows, ids, ok = columns.build(kind, cols, self.sink.ids)
            isolated = self.sink.quarantined_mask(ids)
            if isolated is not None:
                ok &= ~isolated  # dead-lettered one by one, with the reason
            if self.options.symbols is not None:
                wanted = np.isin(cols["symbol"], list(self.options.symbols))
                ok &= wanted
                bad = ~ok & wanted
            else:
                bad = ~ok
            slow.extend(index[bad].tolist())
            if not ok.all():
                rows, ids, index = take_rows(rows, np.flatnonzero(ok)), ids[ok], index[ok]
            if not len(rows):
                continue
            # each bucket's first row (bucket ids are small: a scatter, not a sort)
            first_of = np.full(int(ids.max()) + 1, -1, dtype=np.int64)
            first_of[ids[::-1]] = np.arange(len(ids) - 1, -1, -1)
            uniq = np.flatnonzero(first_of >= 0)
            for bid, i in zip(uniq.tolist(), first_of[uniq].tolist(), strict=True):
                m = good[int(index[i])]
                self.sink.set_owner(bid, _position(m)[0])
            self.sink.add_rows(ATTR_GROUP[kind], ids, rows)
            received = cols.get("received_ns")
            if isinstance(received, np.ma.MaskedArray):
                got = received[ok].compressed() if len(ok) != len(rows) else received.compressed()
                if len(got):
                    self._batch_received.append(got)
        for i in sorted(slow):
            self._handle(good[i], offsets_done=True)

    # --- per message -------------------------------------------------------------------------
    def _handle(self, msg: Message, offsets_done: bool = False) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": str(err)})
            return
        tp, offset = _position(msg)
        if self._batch_started is None:
            self._batch_started = self._poll_started or time.monotonic()
        if not offsets_done:
            self._batch_offsets[tp] = offset + 1
        try:
            kind, record = self.codec.decode(msg.value() or b"")
            if DATA_TYPE_OF_KIND.get(kind) not in self.options.data_types:
                return
            if self.options.symbols is not None and record.get("symbol") not in \
                    self.options.symbols:
                return
            self.sink.add(kind, record, tp)
            received = record.get("received_ns")
            if received:
                self._batch_received.append(np.array([received], dtype=np.int64))
        except DecodeError as exc:
            self._dead_letter(msg, "decode", exc)
        except RecordError as exc:
            self._dead_letter(msg, "invalid", exc)
        except QuarantinedError as exc:
            self._dead_letter(msg, "bucket", exc)

    def _dead_letter(self, msg: Message, reason: str, exc: Exception) -> None:
        assert self.dlq is not None
        # A value too large to copy is left out: the dead letter points at the original
        # (source topic/partition/offset; topics keep their data forever).
        headers = dead_letter_headers(exc, reason, {
            "topic": msg.topic() or "", "partition": msg.partition(),
            "offset": msg.offset(), "timestamp": msg.timestamp()[1]})

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self._dlq_failed += 1

        try:
            produce_dead_letter(self.dlq, self.config.kafka.topics.dead_letter, msg.key(),
                                msg.value(), headers, delivered)
        except KafkaException as kexc:
            raise DeadLetterError(f"dead-letter produce failed: {kexc}") from kexc
        self.dead_letters += 1
        self.metrics.dead_letter.labels(reason).inc()
        log.warning("message sent to the dead-letter topic", extra={
            "reason": reason, "error": str(exc), "topic": msg.topic(),
            "partition": msg.partition(), "offset": msg.offset()})

    # --- checkpoint --------------------------------------------------------------------------
    def _checkpoint(self, wait: bool = False) -> bool:
        """Hand the batch to the writer thread (after the previous one is written).

        Writes are pipelined one deep: Kafka polling and decoding of batch N+1 overlap the
        MarketStore write of batch N, while writes stay strictly sequential (each batch's
        dedupe sees the previous batch's rows). Offsets are queued for a delayed commit only
        when their write succeeded (:meth:`_complete_inflight`).
        """
        assert self.dlq is not None
        try:
            if (self.dead_letters and self.dlq.flush(30) > 0) or self._dlq_failed:
                self._dlq_failed = 0
                raise DeadLetterError("dead-letter topic did not acknowledge")
        except DeadLetterError as exc:
            self._fail(exc)
            return False
        if not self._complete_inflight(block=True):
            return False
        taken = self.sink.take()
        self._inflight = (self._executor.submit(self.sink.flush_taken, taken),
                          dict(self._batch_offsets), self._batch_received, time.time())
        self._batch_offsets = {}
        self._batch_received = []
        self._batch_started = None
        return self._complete_inflight(block=True) if wait else True

    def _complete_inflight(self, block: bool) -> bool:
        """Account for the write on the writer thread if it finished (or wait for it)."""
        if self._inflight is None:
            return True
        future, offsets, received, started = self._inflight
        if not block and not future.done():
            return True
        self._inflight = None
        try:
            result = future.result()
        except MarketStoreError as exc:
            self._fail(exc)
            return False
        if result.rows_written:
            self.batching.observe(result.seconds)
        if received:
            self._sample_latencies(received, result.written_ns or time.time_ns())
        events = sum(result.rows_written.values()) + result.duplicates_dropped
        if result.rows_written or result.duplicates_dropped:
            self.metrics.batch.observe(events)
            self.metrics.write_latency.observe(result.seconds)
            for kind, n in result.rows_written.items():
                self.metrics.written.labels(DATA_TYPE_OF_KIND[kind]).inc(n)
            self.metrics.duplicates.inc(result.duplicates_dropped)
            self.metrics.rows_read.inc(result.rows_read)
        log.debug("batch written", extra={
            "group": self.options.group_id, "client": self.options.client_id,
            "partitions": sorted(f"{t}:{p}" for t, p in offsets),
            "rows": result.rows_written, "duplicates": result.duplicates_dropped,
            "t_start": started, "t_end": time.time()})
        self.last_flush = result
        self._pending.append(PendingCommit(time.monotonic(), offsets, result.probe))
        self._update_lag()
        if self.on_written is not None:
            self.on_written(result)
        return True

    def _sample_latencies(self, received: list[np.ndarray], queryable_ns: int) -> None:
        """End-to-end latencies of a written batch: metric samples and the bench's arrays.

        They end when MarketStore acknowledged the write (the writer thread's clock), not
        when this loop noticed: that can be a poll later.
        The arrays are bounded by samples, not batches: a replay writes batches of up to
        ``batch_max_events`` receive times each, and thousands of those were kept."""
        lat = queryable_ns - np.concatenate(received)
        self.latencies_ns.append(lat)
        self._latency_samples += len(lat)
        while self._latency_samples > MAX_LATENCY_SAMPLES and len(self.latencies_ns) > 1:
            self._latency_samples -= len(self.latencies_ns.popleft())
        for v in lat[:: max(1, len(lat) // 20)]:
            self.metrics.e2e.observe(v / 1e9)

    def _abandon_inflight(self) -> None:
        """Wait for a write in progress and drop its outcome (its events will be re-read)."""
        if self._inflight is not None:
            self._inflight[0].exception()
            self._inflight = None

    def _maybe_commit(self, wait: bool = False, only: set[TP] | None = None) -> None:
        """Commit the offsets of writes older than ``commit_delay_ms`` once a probe reads back.

        In steady state the read-back runs on a thread of its own (it took 3-13 ms, once a
        second, on the loop's critical path) and the commit happens on a later call when it
        succeeded; ``wait`` (rebalance, shutdown) finishes one in progress and verifies and
        commits at once.
        """
        if self._paused_since is not None:
            return
        if self._verifying is not None:
            future, verified, checked = self._verifying
            if not wait and not future.done():
                return
            self._verifying = None
            try:
                ok = future.result()
            except MarketStoreError as exc:
                self._fail(exc)
                return
            if ok:
                self._commit(verified, wait, only)
            else:
                log.warning("written row not yet readable; commit postponed",
                            extra={"bucket": checked.tbk})
            if not wait:
                return
        if not self._pending:
            return
        if not wait and time.monotonic() - self._last_commit < COMMIT_INTERVAL_S:
            return
        delay = self.config.consumer.commit_delay_ms / 1000
        if wait:
            remaining = self._pending[-1].written_at + delay - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        now = time.monotonic()
        ready = [p for p in self._pending if now - p.written_at >= delay]
        if not ready:
            return
        probe = next((p.probe for p in reversed(ready) if p.probe is not None), None)
        if probe is not None and not wait:
            self._last_commit = now
            self._verifying = (self._verify_executor.submit(self.sink.verify, probe,
                                                            self.writer), ready, probe)
            return
        try:
            if probe is not None and not self.sink.verify(probe, self.writer):
                log.warning("written row not yet readable; commit postponed",
                            extra={"bucket": probe.tbk})
                return
        except MarketStoreError as exc:
            self._fail(exc)
            return
        self._commit(ready, wait, only)

    def _commit(self, ready: list[PendingCommit], wait: bool, only: set[TP] | None) -> None:
        """Commit verified pending writes (the oldest ones, unless they were dropped since)."""
        if len(self._pending) < len(ready) or any(
                self._pending[i] is not p for i, p in enumerate(ready)):
            return  # the batch state was dropped (a failure or a lost assignment) meanwhile
        offsets: dict[TP, int] = {}
        for p in ready:
            offsets.update(p.offsets)
        for _ in ready:
            self._pending.popleft()
        self._last_commit = time.monotonic()
        owned = {tp: o for tp, o in offsets.items() if tp in self._assigned
                 and (only is None or tp in only)}
        if not owned:
            return
        self._committed.update(owned)
        assert self.consumer is not None
        try:
            # steady state: asynchronous (a lost commit only means a deduplicated redelivery)
            commits = [TopicPartition(t, p, o) for (t, p), o in owned.items()]
            if wait:
                self.consumer.commit(offsets=commits, asynchronous=False)
            else:
                self.consumer.commit(offsets=commits, asynchronous=True)
            self.metrics.commits.inc()
        except KafkaException as exc:
            # Not fatal: the events are in MarketStore; a redelivery is deduplicated.
            log.warning("offset commit failed", extra={"error": str(exc)})

    def _abandon_verify(self) -> None:
        """Wait for a read-back in progress and drop it (its writes are committed later or
        re-read); the main writer's HTTP session is free again afterwards."""
        if self._verifying is not None:
            self._verifying[0].exception()
            self._verifying = None

    # --- failures ----------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        """Abort the checkpoint: pause, rewind, drop cached state, back off."""
        self._abandon_inflight()
        self._abandon_verify()
        self.metrics.store_errors.inc()
        if isinstance(exc, BucketError):
            self._suspect = exc
        log.warning("batch failed; pausing and rewinding to the last committed offsets",
                    extra={"error": str(exc), "retry_in_s": self._backoff})
        self._drop_batch()
        self.sink.reset()
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            self._backoff = self.config.consumer.retry_initial_s
        assert self.consumer is not None
        try:
            self.consumer.pause(self.consumer.assignment())
        except KafkaException as exc2:
            log.warning("pause failed", extra={"error": str(exc2)})

    def _rewind(self, partitions: list[TopicPartition]) -> None:
        assert self.consumer is not None
        if not partitions:
            return
        committed = self.consumer.committed(partitions, timeout=30)
        for tp in committed:
            target = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, target))
            except KafkaException as exc:
                log.warning("seek failed", extra={"error": str(exc), "topic": tp.topic,
                                                  "partition": tp.partition})

    def _recover(self) -> None:
        assert self.consumer is not None
        # Serve the group protocol while waiting; anything fetched is discarded (rewound).
        self.consumer.consume(num_messages=1000, timeout=self._backoff)
        if self._stop.is_set():
            return
        try:
            self.writer.ping()
            # the server answers: a failure of one bucket was that bucket's own
            suspect, self._suspect = self._suspect, None
            if suspect is not None:
                self._isolate(suspect)
            while True:
                try:
                    repaired = self.sink.repair_recent()
                    break
                except BucketError as exc:
                    if not self._isolate(exc):
                        raise
            self.metrics.repairs.inc(repaired)
        except MarketStoreError as exc:
            self._suspect = None
            self._backoff = min(self._backoff * 2, self.config.consumer.retry_max_s)
            log.warning("MarketStore still unavailable", extra={
                "error": str(exc), "retry_in_s": self._backoff})
            return
        assignment = self.consumer.assignment()
        try:
            self._rewind(assignment)
        except KafkaException as exc:
            log.warning("rewind failed; retrying", extra={"error": str(exc)})
            return
        self.consumer.resume(assignment)
        log.info("MarketStore available again; resumed", extra={
            "paused_s": round(time.monotonic() - (self._paused_since or 0), 3)})
        self._paused_since = None
        self._backoff = self.config.consumer.retry_initial_s

    def _isolate(self, exc: BucketError) -> bool:
        """Count a bucket's failure; True when the bucket is quarantined by it."""
        self.metrics.bucket_failures.inc()
        if not self.sink.note_failure(exc):
            return False
        self.metrics.quarantined.inc()
        log.error("bucket quarantined: its records go to the dead-letter topic", extra={
            "bucket": exc.tbk, "reason": self.sink.quarantined[exc.tbk]})
        return True

    # --- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._assigned |= tps
        log.info("partitions assigned", extra={
            "group": self.options.group_id, "client": self.options.client_id,
            "partitions": sorted(f"{t}:{p}" for t, p in tps), "t": time.time()})
        if self._paused_since is not None:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        if self._paused_since is None:
            ok = self._checkpoint(wait=True) if self._batch_offsets else \
                self._complete_inflight(block=True)
            if ok:
                self._maybe_commit(wait=True)
        self._abandon_inflight()
        self._give_up(tps, "revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        # Someone else may own them already: never commit or write for them again.
        self._abandon_inflight()
        self._abandon_verify()
        self._drop_batch()
        self._give_up(tps, "lost")

    def _drop_batch(self) -> None:
        """Forget the unflushed batch and the uncommitted offsets (their events are re-read).

        ``_batch_started`` goes too: left set, it would make every later poll wait 0 s
        (a busy loop) until the next message arrives.
        """
        self.sink.clear()
        self._pending.clear()
        self._batch_offsets.clear()
        self._batch_received.clear()
        self._batch_started = None

    def _give_up(self, tps: set[TP], how: str) -> None:
        self._assigned -= tps
        self.sink.forget(tps)
        for p in self._pending:
            for tp in tps:
                p.offsets.pop(tp, None)
        log.info(f"partitions {how}", extra={
            "group": self.options.group_id, "client": self.options.client_id,
            "partitions": sorted(f"{t}:{p}" for t, p in tps), "t": time.time()})

    # --- offsets -----------------------------------------------------------------------------
    def _all_partitions(self) -> list[TopicPartition]:
        assert self.consumer is not None
        meta = self.consumer.list_topics(timeout=30)
        out: list[TopicPartition] = []
        for topic in self.topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                continue
            out.extend(TopicPartition(topic, p) for p in tmeta.partitions)
        return out

    def _high_watermarks(self) -> dict[TP, int]:
        assert self.consumer is not None
        out = {}
        for tp in self._all_partitions():
            lo, hi = self.consumer.get_watermark_offsets(tp, timeout=30)
            out[(tp.topic, tp.partition)] = hi
            self._start_offsets.setdefault((tp.topic, tp.partition), lo)
        return out

    def replay_progress(self) -> tuple[int, int] | None:
        """(offsets committed, offsets to commit) from the start offsets up to the end
        offsets taken at start; None unless ``until_caught_up``. Reads only plain dicts,
        so a display thread may call it."""
        ends = self._end_offsets
        if ends is None:
            return None
        starts, committed = dict(self._start_offsets), dict(self._committed)
        done = total = 0
        for tp, end in ends.items():
            start = min(starts.get(tp, 0), end)
            total += end - start
            done += max(0, min(committed.get(tp, start), end) - start)
        return done, total

    def _caught_up(self) -> bool:
        assert self.consumer is not None and self._end_offsets is not None
        if self._pending or self._batch_offsets or self._inflight is not None:
            return False
        todo = [TopicPartition(t, p) for (t, p), end in self._end_offsets.items() if end > 0]
        if not todo:
            return True
        try:
            committed = self.consumer.committed(todo, timeout=30)
        except KafkaException as exc:
            # A broker that just (re)started answers NOT_COORDINATOR or
            # COORDINATOR_LOAD_IN_PROGRESS until the group's coordinator is up: ask again at
            # the next check instead of ending the replay with an error.
            if worth_asking_again(exc):
                log.info("committed offsets not readable yet: %s", exc)
                return False
            raise
        return all(tp.offset >= self._end_offsets[(tp.topic, tp.partition)]
                   for tp in committed)

    def _seed_group_offsets(self, timestamp_ms: int) -> None:
        """A fresh group starting at a time: commit offsets_for_times before subscribing."""
        assert self.consumer is not None
        parts = self._all_partitions()
        committed = self.consumer.committed(parts, timeout=30)
        if any(tp.offset >= 0 for tp in committed):
            log.info("group has committed offsets; --from-timestamp ignored")
            return
        query = [TopicPartition(tp.topic, tp.partition, timestamp_ms) for tp in parts]
        found = self.consumer.offsets_for_times(query, timeout=30)
        seeds = []
        for tp in found:
            offset = tp.offset
            if offset < 0:  # nothing at or after the time: start at the end
                _lo, offset = self.consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=30)
            seeds.append(TopicPartition(tp.topic, tp.partition, offset))
            self._start_offsets[(tp.topic, tp.partition)] = offset
        if seeds:
            self.consumer.commit(offsets=seeds, asynchronous=False)
        log.info("group seeded at a timestamp", extra={"timestamp_ms": timestamp_ms,
                                                        "partitions": len(seeds)})

    def _update_lag(self) -> None:
        assert self.consumer is not None
        try:
            positions = self.consumer.position(
                [TopicPartition(t, p) for t, p in self._assigned])
        except KafkaException:
            return
        for tp in positions:
            try:
                _lo, hi = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if hi >= 0 and tp.offset >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(hi - tp.offset)


def consumed_symbols(values: Iterable[str] | None) -> frozenset[str] | None:
    """The --symbols filter as Massive tickers, checked to be storable."""
    if values is None:
        return None
    out = set()
    for v in values:
        bucket_symbol(v)  # raises RecordError for a symbol that can never be stored
        out.add(v)
    return frozenset(out)


def _position(msg: Message) -> tuple[TP, int]:
    """((topic, partition), offset) of a fetched message. librdkafka leaves them unset only on
    some error events, which are handled before a message gets here."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"a fetched message without a position ({msg.error()})")
    return (topic, partition), offset
