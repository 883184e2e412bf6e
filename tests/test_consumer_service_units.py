"""The consumer's parts through their public methods: the loop's state on a lost assignment
and its resources, the checkpoint's delayed verified commits, the dead letters'
acknowledgement, the latency samples, and the group offsets ``replay`` uses (real Kafka)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from common.config import Config, MarketStoreConfig
from common.metrics import NAMESPACE, new_registry
from consumer.batch import Batch
from consumer.checkpoint import Checkpoint
from consumer.deadletters import ConsumerDeadLetters, DeadLetterError
from consumer.metrics import MAX_LATENCY_SAMPLES, ConsumerMetrics, LatencySamples
from consumer.offsets import GroupOffsets, replay_progress
from consumer.service import ConsumerService, Options
from consumer.sink import Probe
from consumer.writer import MarketStoreError
from tests.support.sockets import established_to
from tests.support.testkit import create_topics, make_config
from tests.support.wait import wait_for

UNREACHABLE = "http://127.0.0.1:9/rpc"  # the writers only create HTTP sessions: no request
PROBE = Probe("X/1Sec/TRADE", 1, 1, 1)
T0, T1 = ("t", 0), ("t", 1)


# --- the loop ------------------------------------------------------------------------------
def test_a_lost_assignment_drops_the_whole_unflushed_batch() -> None:
    config = Config(marketstore=MarketStoreConfig(url=UNREACHABLE))
    service = ConsumerService(config, Options(group_id="unit"))
    try:
        service.batch.offsets[T0] = 5
        service.batch.received.append(np.array([1], dtype=np.int64))
        service.batch.started = 123.0
        service.checkpoint.written({T0: 4}, PROBE)  # written, not yet committed
        service.partitions_lost(None, [TopicPartition("t", 0)])  # type: ignore[arg-type]
        assert service.batch.offsets == {} and service.batch.received == []
        # a stale start would make every later poll wait 0 s: a busy loop while idle
        assert service.batch.started is None
        assert service.sink.pending == 0 and service.checkpoint.pending == 0
    finally:
        service.close()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc (Linux)")
def test_close_releases_the_marketstore_connections(marketstore_url: str) -> None:
    port = urlsplit(marketstore_url).port or 5993
    before = established_to(port)
    service = ConsumerService(Config(marketstore=MarketStoreConfig(url=marketstore_url)),
                              Options(group_id="unit"))
    service.writer.ping()
    service.sink.writer.ping()
    service.watch.restarted()  # opens the restart watch's idle connection
    opened = established_to(port) - before
    assert len(opened) == 3  # read-back writer, sink writer, restart watch
    service.close()
    assert not established_to(port) & opened


def test_a_failed_open_closes_what_it_opened() -> None:
    base = Config(marketstore=MarketStoreConfig(url=UNREACHABLE))
    # the group consumer is created, then the dead-letter producer refuses its settings
    config = replace(base, kafka=replace(base.kafka, producer={"no.such.property": "1"}))
    service = ConsumerService(config, Options(group_id="unit"))
    with pytest.raises(KafkaException):
        service.run()
    assert service.consumer is None  # closed, not left open in the group


def test_a_batch_is_due_when_it_holds_something_and_is_full_or_old() -> None:
    batch = Batch()
    assert not batch.due(pending=10, max_events=10, max_s=0.02, now=100.0)  # holds nothing
    batch.offsets[T0] = 1
    batch.started = 100.0
    assert not batch.due(pending=9, max_events=10, max_s=0.02, now=100.01)
    assert batch.due(pending=10, max_events=10, max_s=0.02, now=100.01)  # full
    assert batch.due(pending=1, max_events=10, max_s=0.02, now=100.03)  # old


# --- latency samples -----------------------------------------------------------------------
def test_latency_samples_are_bounded_by_count_not_by_batches() -> None:
    registry = new_registry()
    samples = LatencySamples(ConsumerMetrics(registry).e2e)
    # a replay batch of batch_max_events receive times (as the poll loop collects them)
    batch = [np.arange(1, 25_001, dtype=np.int64), np.arange(25_001, 50_001, dtype=np.int64)]
    for _ in range(40):
        samples.add(batch, 60_000)
    kept = sum(len(a) for a in samples.arrays)
    assert 0 < kept <= MAX_LATENCY_SAMPLES
    assert len(samples.arrays[-1]) == 50_000  # the newest batch is kept
    # each ends when MarketStore acknowledged the write, not when the loop noticed
    assert samples.arrays[-1][0] == 60_000 - 1
    assert samples.arrays[-1][-1] == 60_000 - 50_000
    observed = registry.get_sample_value(f"{NAMESPACE}_consumer_end_to_end_seconds_count")
    assert observed == 40 * 20  # the histogram gets a sample of each batch


# --- the checkpoint ------------------------------------------------------------------------
class _GroupConsumer:
    """Stands in for the group consumer's ``commit`` (all the checkpoint calls)."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int]], bool]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(([(tp.topic, tp.partition, tp.offset) for tp in offsets],
                             asynchronous))


def _checkpoint(verify: Callable[[Probe], bool], delay_s: float = 0.0
                ) -> tuple[Checkpoint, Callable[[], float]]:
    """A checkpoint with no commit interval, and a reader of its commits metric."""
    registry = new_registry()
    checkpoint = Checkpoint(verify, delay_s, ConsumerMetrics(registry).commits, interval_s=0.0)
    return checkpoint, lambda: registry.get_sample_value(
        f"{NAMESPACE}_consumer_commits_total") or 0.0


def test_the_read_back_runs_off_the_loop_and_commits_only_what_it_verified() -> None:
    release = threading.Event()
    checkpoint, commits = _checkpoint(lambda probe: release.wait(5))
    group = _GroupConsumer()
    owned = {T0}
    try:
        checkpoint.written({T0: 10}, PROBE)
        checkpoint.commit(group, owned)  # type: ignore[arg-type]  # starts the read-back
        assert checkpoint.reading and not group.commits
        # the pending commits are dropped meanwhile (a failure, a lost assignment)
        checkpoint.drop()
        checkpoint.written({T0: 20}, PROBE)
        release.set()
        wait_for(lambda: (checkpoint.commit(group, owned),  # type: ignore[arg-type]
                          not checkpoint.reading)[1], 10, "the read-back accounted for")
        assert not group.commits and checkpoint.pending == 1
        # the next read-back covers the new write and commits it, asynchronously
        checkpoint.commit(group, owned)  # type: ignore[arg-type]
        assert checkpoint.reading
        wait_for(lambda: (checkpoint.commit(group, owned),  # type: ignore[arg-type]
                          group.commits)[1], 10, "the commit after the read-back")
        assert group.commits == [([("t", 0, 20)], True)]
        assert checkpoint.pending == 0 and checkpoint.committed == {T0: 20}
        assert commits() == 1
    finally:
        checkpoint.close()


def test_a_waiting_commit_waits_out_the_delay_and_commits_only_owned_partitions() -> None:
    checkpoint, commits = _checkpoint(lambda probe: True, delay_s=0.2)
    group = _GroupConsumer()
    try:
        checkpoint.written({T0: 5, T1: 7}, PROBE)
        started = time.monotonic()
        checkpoint.commit(group, {T0}, wait=True)  # type: ignore[arg-type]
        assert time.monotonic() - started >= 0.15
        assert group.commits == [([("t", 0, 5)], False)]  # synchronous, T1 not ours
        assert checkpoint.pending == 0 and commits() == 1
    finally:
        checkpoint.close()


def test_given_up_partitions_are_never_committed() -> None:
    checkpoint, _ = _checkpoint(lambda probe: True)
    group = _GroupConsumer()
    try:
        checkpoint.written({T0: 5, T1: 7}, PROBE)
        checkpoint.forget({T1})
        checkpoint.commit(group, {T0, T1}, wait=True)  # type: ignore[arg-type]
        assert group.commits == [([("t", 0, 5)], False)]
    finally:
        checkpoint.close()


def test_an_unreadable_row_postpones_the_commit_and_a_failed_read_back_raises() -> None:
    answers: list[bool | Exception] = [False, MarketStoreError("down"), True]

    def verify(probe: Probe) -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    checkpoint, commits = _checkpoint(verify)
    group = _GroupConsumer()
    try:
        checkpoint.written({T0: 5}, PROBE)
        checkpoint.commit(group, {T0}, wait=True)  # type: ignore[arg-type]
        assert not group.commits and checkpoint.pending == 1
        with pytest.raises(MarketStoreError):
            checkpoint.commit(group, {T0}, wait=True)  # type: ignore[arg-type]
        assert not group.commits and checkpoint.pending == 1 and commits() == 0
        checkpoint.commit(group, {T0}, wait=True)  # type: ignore[arg-type]
        assert group.commits == [([("t", 0, 5)], False)]
    finally:
        checkpoint.close()


def test_a_write_without_a_probe_commits_without_reading_back() -> None:
    def verify(probe: Probe) -> bool:
        raise AssertionError("nothing to read back")

    checkpoint, _ = _checkpoint(verify)
    group = _GroupConsumer()
    try:
        checkpoint.written({T0: 3}, None)  # e.g. every row was a duplicate
        checkpoint.commit(group, {T0})  # type: ignore[arg-type]
        assert group.commits == [([("t", 0, 3)], True)]
    finally:
        checkpoint.close()


# --- dead letters --------------------------------------------------------------------------
class _Message:
    def __init__(self, offset: int) -> None:
        self.at = offset

    def topic(self) -> str:
        return "src"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self.at

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000

    def key(self) -> bytes:
        return b"AAPL"

    def value(self) -> bytes:
        return b"\x00bad"


class _Producer:
    """Stands in for librdkafka: queues until ``flush``, which delivers (or fails) them."""

    def __init__(self) -> None:
        self.queued: list[tuple[dict, object]] = []
        self.delivered: list[dict] = []
        self.fail_next = False
        self.stuck = False

    def produce(self, topic: str, value: bytes | None, key: object, headers: list,
                on_delivery: object) -> None:
        self.queued.append(({"topic": topic, "key": key, "value": value,
                             "headers": dict(headers)}, on_delivery))

    def flush(self, timeout: float) -> int:
        if self.stuck:
            return len(self.queued)
        for record, on_delivery in self.queued:
            err = KafkaError(KafkaError._MSG_TIMED_OUT) if self.fail_next else None
            on_delivery(err, None)  # type: ignore[operator]
            if err is None:
                self.delivered.append(record)
        self.queued.clear()
        self.fail_next = False
        return 0


def test_dead_letters_keep_the_source_and_must_be_acknowledged_before_a_commit() -> None:
    registry = new_registry()
    producer = _Producer()
    dead = ConsumerDeadLetters(Config(), "unit-dlq", ConsumerMetrics(registry).dead_letter,
                               producer)
    dead.confirm()  # nothing sent: nothing to wait for
    dead.send(_Message(7), "decode", ValueError("not Avro"))  # type: ignore[arg-type]
    dead.confirm()
    [record] = producer.delivered
    assert record["key"] == b"AAPL" and record["value"] == b"\x00bad"
    assert record["headers"]["error.reason"] == b"decode"
    assert record["headers"]["source.offset"] == b"7"
    assert registry.get_sample_value(f"{NAMESPACE}_consumer_dead_letter_total",
                                     {"reason": "decode"}) == 1
    # a delivery failure fails one confirm (the batch is retried), not every later one
    producer.fail_next = True
    dead.send(_Message(8), "invalid", ValueError("bad price"))  # type: ignore[arg-type]
    with pytest.raises(DeadLetterError):
        dead.confirm()
    dead.confirm()
    # one still unacknowledged fails it too
    producer.stuck = True
    dead.send(_Message(9), "invalid", ValueError("bad price"))  # type: ignore[arg-type]
    with pytest.raises(DeadLetterError):
        dead.confirm()
    assert dead.sent == 3


# --- group offsets (real Kafka) ------------------------------------------------------------
def test_group_offsets_seed_at_a_time_take_the_end_and_see_the_group_caught_up(
        kafka_bootstrap: str) -> None:
    config = make_config(kafka_bootstrap, UNREACHABLE, partitions=1)
    create_topics(config)
    topic = config.kafka.topics.trades
    base_ms = 1_700_000_000_000
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        producer.produce(topic, key=b"K", value=b"v", timestamp=base_ms + i * 1000)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap,
                         "group.id": config.consumer.group_id, "enable.auto.commit": False})
    tp = (topic, 0)
    try:
        # a broker that just started answers NOT_COORDINATOR until the group's coordinator
        # is up (seeding, as in ``replay``, asks once)
        wait_for(lambda: consumer.committed([TopicPartition(topic, 0)], timeout=5), 60,
                 "the group coordinator", retry_on=(KafkaException,))
        offsets = GroupOffsets(consumer, [topic])
        offsets.seed_at(base_ms + 4000)
        [seeded] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert seeded.offset == 4
        offsets.take_end_offsets()
        assert offsets.ends == {tp: 10} and offsets.starts == {tp: 4}
        assert not offsets.caught_up()
        assert replay_progress(offsets.starts, offsets.ends, {tp: 7}) == (3, 6)
        consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
        assert offsets.caught_up()
        offsets.seed_at(base_ms)  # a group with committed offsets keeps them
        [kept] = consumer.committed([TopicPartition(topic, 0)], timeout=30)
        assert kept.offset == 10
        # lag: high watermark minus the position after reading offset 6
        consumer.assign([TopicPartition(topic, 0, 6)])

        def read_one() -> bool:
            return any(m.error() is None for m in consumer.consume(1, 0.5))

        wait_for(read_one, 30, "a message from offset 6")
        wait_for(lambda: offsets.lag([tp]) == [(tp, 3)], 30, "lag 3")
    finally:
        consumer.close()


def test_progress_without_end_offsets_is_none() -> None:
    assert replay_progress({}, None, {}) is None
    # a partition committed past its end counts as done, never more
    assert replay_progress({T0: 0}, {T0: 5}, {T0: 9}) == (5, 5)
