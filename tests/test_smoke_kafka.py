"""Smoke test against a real Kafka broker: a round trip through a consumer group whose
committed offsets survive the consumer and tell the next member where to resume."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 2


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = f"smoke-{uuid.uuid4().hex}"
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS,
                                  replication_factor=1)])[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def produce(bootstrap: str, topic: str, messages: dict[bytes, bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in messages.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def group_consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    return consumer


def consume(consumer: Consumer, count: int, timeout_s: float = 60.0) -> dict[bytes, bytes]:
    """Messages read until ``count`` arrived and every assigned partition is read to its
    end offset, so one too many (a replay from a wrong offset) is in the result too."""
    got: dict[bytes, bytes] = {}

    def done() -> bool:
        msg = consumer.poll(0.5)
        if msg is not None:
            assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, \
                msg.error()
            if msg.error() is None:
                got[msg.key()] = msg.value()
        return len(got) >= count and at_end(consumer)

    wait_for(done, timeout_s, f"{count} messages and the end of every partition")
    return got


def at_end(consumer: Consumer) -> bool:
    """Every assigned partition's next offset is its end offset (the committed one for
    a partition the member has read nothing from)."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    for tp in consumer.position(assignment):
        _lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
        offset = tp.offset
        if offset < 0:
            offset = consumer.committed([tp], timeout=10)[0].offset
        if offset < hi and hi > 0:
            return False
    return True


def test_round_trip_with_consumer_group_and_committed_offsets(kafka_bootstrap: str,
                                                               topic: str) -> None:
    group = f"smoke-group-{uuid.uuid4().hex}"
    first = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(40)}
    produce(kafka_bootstrap, topic, first)

    consumer = group_consumer(kafka_bootstrap, group, topic)
    try:
        assert consume(consumer, len(first)) == first
        consumer.commit(asynchronous=False)
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = consumer.committed(partitions, timeout=10)
        high = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
    finally:
        consumer.close()
    assert [tp.offset for tp in committed] == high
    assert sum(high) == len(first)

    # The next member of the group starts at the committed offsets: only the new messages.
    second = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(40, 50)}
    produce(kafka_bootstrap, topic, second)
    consumer = group_consumer(kafka_bootstrap, group, topic)
    try:
        assert consume(consumer, len(second)) == second
    finally:
        consumer.close()
