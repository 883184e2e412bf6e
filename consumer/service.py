"""The consumer group loop: Kafka -> decode -> MarketStore sink -> delayed, verified commits.

Checkpointing follows quix-streams' shape: every record is ``add()``-ed to the sink, the sink is
``flush()``-ed at the end of a batch (``consumer.batch_max_events`` or ``batch_max_ms``), and
offsets are committed only after every flush succeeded: here additionally only once the write
is older than ``consumer.commit_delay_ms`` and one written row reads back
(``consumer.checkpoint``). Any MarketStore error (or a dead-letter delivery
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
dead-letter topic (``consumer.deadletters``); they are counted and consumption goes on. The
dead letters are acknowledged before the offsets that cover them are committed.

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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from common.config import Config
from common.kafka import AuthWatch
from common.metrics import new_registry
from consumer import columns
from consumer.batch import TP, Batch, InflightWrite
from consumer.batching import AdaptiveBatching
from consumer.buckets import RecordError, bucket_symbol
from consumer.checkpoint import Checkpoint
from consumer.deadletters import ConsumerDeadLetters, DeadLetterError
from consumer.dedupe import take_rows
from consumer.metrics import ConsumerMetrics, LatencySamples
from consumer.offsets import GroupOffsets, replay_progress
from consumer.sink import BucketError, FlushResult, MarketStoreSink, QuarantinedError
from consumer.writer import MarketStoreError, MarketStoreWriter, ServerWatch
from schemas.batch import decode_messages
from schemas.codec import DecodeError, RegistryError, make_codec
from schemas.spec import Kind

log = logging.getLogger(__name__)

# Fetch in chunks of up to 10 ms instead of one fetch per produce request: with librdkafka's
# defaults (fetch.min.bytes 1) the broker answered every few hundred bytes, which cost it 0.45
# of a core at 50k events/s on a 2-core machine and made its p99 fetch latency 20-40 ms; with
# these, 0.3 of a core and 11-19 ms (kafka.consumer in the config overrides them).
FETCH_DEFAULTS: dict[str, object] = {"fetch.min.bytes": 65536, "fetch.wait.max.ms": 10}


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


class ConsumerService:
    def __init__(self, config: Config, options: Options,
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.options = options
        self.registry = registry or new_registry()
        self.metrics = ConsumerMetrics(self.registry)
        self.latency = LatencySamples(self.metrics.e2e)
        self.latencies_ns = self.latency.arrays  # e2e samples (bench), bounded
        self.codec = make_codec(config)
        # the commit's read-back (never used by two threads at once: the loop waits for a
        # read-back in progress before it uses this writer itself)
        self.writer = MarketStoreWriter(config.marketstore.url, config.marketstore.timeout_s)
        # the sink writes on the writer thread: its own HTTP session
        self.sink = MarketStoreSink(MarketStoreWriter(config.marketstore.url,
                                                      config.marketstore.timeout_s),
                                    bucket_max_attempts=config.consumer.bucket_max_attempts)
        self.checkpoint = Checkpoint(lambda probe: self.sink.verify(probe, self.writer),
                                     config.consumer.commit_delay_ms / 1000,
                                     self.metrics.commits)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="marketstore-writer")
        self._inflight: InflightWrite | None = None
        self.batch = Batch()
        self.watch = ServerWatch(config.marketstore.url)
        self.fast_path = True  # columnar decode (schemas.batch); False: per-record reference
        topics = config.kafka.topics
        self.topics = [topics.for_type(t) for t in options.data_types]
        self._stop = threading.Event()
        self._poll_started = 0.0  # when the current poll began (a batch's age counts from it)
        self._paused_since: float | None = None
        self._backoff = config.consumer.retry_initial_s
        self._assigned: set[TP] = set()
        self._suspect: BucketError | None = None  # the failure that paused, if one bucket's
        self.consumer: Consumer | None = None
        self.dlq: ConsumerDeadLetters | None = None
        self._dead_letters_closed = 0  # what the closed dead-letter producer sent
        self.offsets: GroupOffsets | None = None
        self.last_flush: FlushResult | None = None
        # a wrong password or CA ends the run (KafkaAuthError) instead of a silent retry loop
        self._auth = AuthWatch(config.kafka.bootstrap_servers)
        self.on_written: Callable[[FlushResult], None] | None = None  # hook (bench)
        c = config.consumer
        self.batching = AdaptiveBatching(c.batch_max_ms, c.batch_write_ratio,
                                         c.batch_adaptive_max_ms)

    @property
    def dead_letters(self) -> int:
        """Messages sent to the dead-letter topic so far."""
        return self.dlq.sent if self.dlq is not None else self._dead_letters_closed

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
        self.dlq = ConsumerDeadLetters(self.config, f"{self.options.client_id}-dlq",
                                       self.metrics.dead_letter)
        self.offsets = GroupOffsets(self.consumer, self.topics)
        if self.options.start_timestamp_ms is not None:
            self.offsets.seed_at(self.options.start_timestamp_ms)
        if self.options.until_caught_up:
            self.offsets.take_end_offsets()
        self.consumer.subscribe(self.topics, on_assign=self.partitions_assigned,
                                on_revoke=self.partitions_revoked,
                                on_lost=self.partitions_lost)

    def run(self) -> int:
        max_events = self.config.consumer.batch_max_events
        last_caught_up_check = 0.0
        try:
            if self.consumer is None:
                self.open()  # inside the try: a half-opened service is closed too
            assert self.consumer is not None and self.offsets is not None
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
                elif self.batch.started is not None:
                    timeout = max(0.0, self.batch.started + max_s - time.monotonic())
                else:
                    timeout = max_s
                room = max_events - self.sink.pending
                if room > 0 and not self._poll(min(room, 100_000), timeout):
                    continue
                self._complete_inflight(block=False)
                if self._paused_since is not None:
                    continue
                if self._inflight is None and self._batch_due(max_events, max_s):
                    self._flush_batch()
                self._commit()
                if self.offsets.ends is not None and \
                        time.monotonic() - last_caught_up_check > 1:
                    last_caught_up_check = time.monotonic()
                    if self._caught_up():
                        log.info("caught up with the end offsets taken at start")
                        break
            self._shutdown_flush()
        finally:
            self.close()
        return 0

    def _batch_due(self, max_events: int, max_s: float) -> bool:
        return self.batch.due(self.sink.pending, max_events, max_s, time.monotonic())

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
        future = self._inflight.future
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
            self.dlq.close()
            self._dead_letters_closed = self.dlq.sent
            self.dlq = None
        self.watch.close()
        self._executor.shutdown(wait=True)
        self.checkpoint.close()
        self.writer.close()
        self.sink.writer.close()

    def _shutdown_flush(self) -> None:
        if self._paused_since is not None:
            return
        try:
            ok = self._flush_batch(wait=True) if self.batch.offsets else \
                self._complete_inflight(block=True)
            if ok:
                self._commit(wait=True)
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
        batch = self.batch
        for tp, offset in last.items():
            batch.offsets[tp] = offset + 1
        if batch.started is None:
            batch.started = self._poll_started or time.monotonic()
        slow = sorted([i for i, _ in result.errors] + [i for i, _k, _r in result.records])
        for kind, cols in result.columns.items():
            if Kind.of(kind).data_type not in self.options.data_types:
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
            self.sink.add_rows(Kind.of(kind).attr_group, ids, rows)
            received = cols.get("received_ns")
            if isinstance(received, np.ma.MaskedArray):
                got = received[ok].compressed() if len(ok) != len(rows) else received.compressed()
                if len(got):
                    batch.received.append(got)
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
        batch = self.batch
        if batch.started is None:
            batch.started = self._poll_started or time.monotonic()
        if not offsets_done:
            batch.offsets[tp] = offset + 1
        try:
            kind, record = self.codec.decode(msg.value() or b"")
            if Kind.of(kind).data_type not in self.options.data_types:
                return
            if self.options.symbols is not None and record.get("symbol") not in \
                    self.options.symbols:
                return
            self.sink.add(kind, record, tp)
            received = record.get("received_ns")
            if received:
                batch.received.append(np.array([received], dtype=np.int64))
        except DecodeError as exc:
            self._dead_letter(msg, "decode", exc)
        except RecordError as exc:
            self._dead_letter(msg, "invalid", exc)
        except QuarantinedError as exc:
            self._dead_letter(msg, "bucket", exc)

    def _dead_letter(self, msg: Message, reason: str, exc: Exception) -> None:
        assert self.dlq is not None
        self.dlq.send(msg, reason, exc)

    # --- flush and commit --------------------------------------------------------------------
    def _flush_batch(self, wait: bool = False) -> bool:
        """Hand the batch to the writer thread (after the previous one is written).

        Writes are pipelined one deep: Kafka polling and decoding of batch N+1 overlap the
        MarketStore write of batch N, while writes stay strictly sequential (each batch's
        dedupe sees the previous batch's rows). Offsets are queued for a delayed commit only
        when their write succeeded (:meth:`_complete_inflight`).
        """
        assert self.dlq is not None
        try:
            self.dlq.confirm()
        except DeadLetterError as exc:
            self._fail(exc)
            return False
        if not self._complete_inflight(block=True):
            return False
        taken = self.sink.take()
        batch, self.batch = self.batch, Batch()
        self._inflight = InflightWrite(self._executor.submit(self.sink.flush_taken, taken),
                                       batch.offsets, batch.received, time.time())
        return self._complete_inflight(block=True) if wait else True

    def _complete_inflight(self, block: bool) -> bool:
        """Account for the write on the writer thread if it finished (or wait for it)."""
        inflight = self._inflight
        if inflight is None:
            return True
        if not block and not inflight.future.done():
            return True
        self._inflight = None
        try:
            result = inflight.future.result()
        except MarketStoreError as exc:
            self._fail(exc)
            return False
        if result.rows_written:
            self.batching.observe(result.seconds)
        if inflight.received:
            self.latency.add(inflight.received, result.written_ns or time.time_ns())
        self.metrics.observe_write(result)
        log.debug("batch written", extra={
            "group": self.options.group_id, "client": self.options.client_id,
            "partitions": sorted(f"{t}:{p}" for t, p in inflight.offsets),
            "rows": result.rows_written, "duplicates": result.duplicates_dropped,
            "t_start": inflight.started, "t_end": time.time()})
        self.last_flush = result
        self.checkpoint.written(inflight.offsets, result.probe)
        self._update_lag()
        if self.on_written is not None:
            self.on_written(result)
        return True

    def _abandon_inflight(self) -> None:
        """Wait for a write in progress and drop its outcome (its events will be re-read)."""
        if self._inflight is not None:
            self._inflight.future.exception()
            self._inflight = None

    def _commit(self, wait: bool = False) -> None:
        """Let the checkpoint commit what is due (nothing while paused)."""
        if self._paused_since is not None:
            return
        assert self.consumer is not None
        try:
            self.checkpoint.commit(self.consumer, self._assigned, wait)
        except MarketStoreError as exc:
            self._fail(exc)

    # --- failures ----------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        """Abort the checkpoint: pause, rewind, drop cached state, back off."""
        self._abandon_inflight()
        self.checkpoint.abandon_read_back()
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

    # --- rebalance (librdkafka calls these from inside consume()) ----------------------------
    def partitions_assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = {(p.topic, p.partition) for p in partitions}
        self._assigned |= tps
        log.info("partitions assigned", extra={
            "group": self.options.group_id, "client": self.options.client_id,
            "partitions": sorted(f"{t}:{p}" for t, p in tps), "t": time.time()})
        if self._paused_since is not None:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)

    def partitions_revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Flush and commit before the partitions are given up."""
        tps = {(p.topic, p.partition) for p in partitions}
        if self._paused_since is None:
            ok = self._flush_batch(wait=True) if self.batch.offsets else \
                self._complete_inflight(block=True)
            if ok:
                self._commit(wait=True)
        self._abandon_inflight()
        self._give_up(tps, "revoked")

    def partitions_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Someone else may own them already: never commit or write for them again."""
        tps = {(p.topic, p.partition) for p in partitions}
        self._abandon_inflight()
        self.checkpoint.abandon_read_back()
        self._drop_batch()
        self._give_up(tps, "lost")

    def _drop_batch(self) -> None:
        """Forget the unflushed batch and the uncommitted offsets (their events are re-read)."""
        self.sink.clear()
        self.checkpoint.drop()
        self.batch.clear()

    def _give_up(self, tps: set[TP], how: str) -> None:
        self._assigned -= tps
        self.sink.forget(tps)
        self.checkpoint.forget(tps)
        log.info(f"partitions {how}", extra={
            "group": self.options.group_id, "client": self.options.client_id,
            "partitions": sorted(f"{t}:{p}" for t, p in tps), "t": time.time()})

    # --- offsets -----------------------------------------------------------------------------
    def replay_progress(self) -> tuple[int, int] | None:
        """(offsets committed, offsets to commit) from the start offsets up to the end
        offsets taken at start; None unless ``until_caught_up``. Reads only plain dicts,
        so a display thread may call it."""
        offsets = self.offsets
        if offsets is None:
            return None
        return replay_progress(offsets.starts, offsets.ends, self.checkpoint.committed)

    def _caught_up(self) -> bool:
        assert self.offsets is not None
        if self.checkpoint.pending or self.batch.offsets or self._inflight is not None:
            return False
        return self.offsets.caught_up()

    def _update_lag(self) -> None:
        assert self.offsets is not None
        for (topic, partition), lag in self.offsets.lag(self._assigned):
            self.metrics.lag.labels(topic, str(partition)).set(lag)


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
