"""Reading Kafka topics back in tests: every record of a config's topics, the dead letters.

Each read goes to the end offsets taken when it starts (what Kafka acknowledged before),
never for a fixed time: a loaded machine makes a timed read come back short."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from common.config import Config
from common.kafka import kafka_client_config
from schemas.codec import make_codec
from tests.support.wait import wait_for


def read_to_end(config: Config, topics: Iterable[str],
                timeout_s: float = 60.0) -> list[Message]:
    """Every message of ``topics`` (those that exist), from offset 0 to the end offsets at
    the call, in offset order per partition. The client has ``kafka.properties`` (SASL)."""
    consumer = Consumer({**kafka_client_config(config, "admin"),
                         "group.id": f"readback-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    got: list[Message] = []
    try:
        assignment, ends = [], {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                continue
            for p in meta.partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if hi > lo:
                    assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
                    ends[(topic, p)] = hi
        if not assignment:
            return got
        consumer.assign(assignment)

        def read_more() -> bool:
            for msg in consumer.consume(10000, timeout=1.0):
                if msg.error():
                    continue
                tp = (msg.topic(), msg.partition())
                if tp not in ends:
                    continue
                got.append(msg)
                if msg.offset() + 1 >= ends[tp]:
                    del ends[tp]
            return not ends

        wait_for(read_more, timeout_s, f"every partition of {list(topics)} read to its end")
    finally:
        consumer.close()
    return got


def read_topics(config: Config, kinds: tuple[str, ...] = ("bar", "trade", "quote")
                ) -> dict[str, list[dict[str, Any]]]:
    """Every record on the config's topics, from offset 0 to the high watermarks."""
    codec = make_codec(config)
    topics = {"bar": config.kafka.topics.bars, "trade": config.kafka.topics.trades,
              "quote": config.kafka.topics.quotes}
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for msg in read_to_end(config, [topics[k] for k in kinds]):
        kind, record = codec.decode(msg.value())
        assert msg.key() == record["symbol"].encode()
        out[kind].append(record)
    return out


def read_dead_letters(config: Config) -> list[Message]:
    """Every record of the dead-letter topic, to its end offsets at the call."""
    return read_to_end(config, [config.kafka.topics.dead_letter])


def committed_to_end(config: Config) -> bool:
    """The config's consumer group committed every partition of its data topics up to
    the end offsets: whatever it will ever write of what is in Kafka now, it has written."""
    topics = [config.kafka.topics.bars, config.kafka.topics.trades, config.kafka.topics.quotes]
    # not subscribed: asking for the group's offsets does not join it
    probe = Consumer({**kafka_client_config(config, "admin"),
                      "group.id": config.consumer.group_id, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(t, p) for t in topics
                 for p in probe.list_topics(t, timeout=10).topics[t].partitions]
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in probe.committed(parts, timeout=10)}
        for tp in parts:
            lo, hi = probe.get_watermark_offsets(tp, timeout=10)
            if hi > lo and committed[(tp.topic, tp.partition)] < hi:
                return False
        return True
    finally:
        probe.close()
