"""Reading Kafka topics back in tests: every record of a config's topics, the dead letters."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from common.config import Config
from schemas.codec import make_codec
from tests.support.testkit import unique


def read_topics(config: Config, kinds: tuple[str, ...] = ("bar", "trade", "quote")
                ) -> dict[str, list[dict[str, Any]]]:
    """Every record on the config's topics, from offset 0 to the high watermarks."""
    codec = make_codec(config)
    topics = {"bar": config.kafka.topics.bars, "trade": config.kafka.topics.trades,
              "quote": config.kafka.topics.quotes}
    consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                         "group.id": f"bf-test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": False})
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    try:
        assignment, ends = [], {}
        for kind in kinds:
            meta = consumer.list_topics(topics[kind], timeout=10).topics[topics[kind]]
            if meta.error is not None:
                continue
            for p in meta.partitions:
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topics[kind], p),
                                                        timeout=10)
                if hi > lo:
                    assignment.append(TopicPartition(topics[kind], p, OFFSET_BEGINNING))
                    ends[(topics[kind], p)] = hi
        if not assignment:
            return out
        consumer.assign(assignment)
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(10000, timeout=1.0):
                if msg.error():
                    continue
                kind, record = codec.decode(msg.value())
                assert msg.key() == record["symbol"].encode()
                out[kind].append(record)
                tp = (msg.topic(), msg.partition())
                if tp in ends and msg.offset() + 1 >= ends[tp]:
                    del ends[tp]
        assert not ends, f"could not read to the end of {ends}"
    finally:
        consumer.close()
    return out




def read_dead_letters(config: Config, n: int) -> list[Message]:
    """Up to ``n`` records of the dead-letter topic (polling for at most ~30 s)."""
    reader = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                       "group.id": unique("dlq"), "auto.offset.reset": "earliest"})
    reader.subscribe([config.kafka.topics.dead_letter])
    got: list[Message] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in reader.consume(n - len(got), 0.5) if m.error() is None]
    finally:
        reader.close()
    return got


