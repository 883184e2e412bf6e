"""Which records a topic holds more than once, read back from Kafka (the broker-fault tests)."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from common.config import Config


def repeated_values(config: Config, partitions: list[tuple[str, int]],
                    timeout_s: float = 60.0) -> dict[tuple[str, int], list[list[int]]]:
    """(topic, partition) -> the offsets of each value stored more than once there. Every
    live record carries its symbol and sequence number, so two equal values are one
    record written twice."""
    reader = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                       "group.id": f"copies-{uuid.uuid4().hex}",
                       "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        ends = {}
        for topic, partition in partitions:
            _low, high = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                      timeout=10)
            ends[(topic, partition)] = high
        reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        offsets: dict[tuple[str, int], dict[bytes, list[int]]] = defaultdict(
            lambda: defaultdict(list))
        pending = {key for key, high in ends.items() if high > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading back {sorted(pending)} took over {timeout_s} s")
            for msg in reader.consume(1000, 1.0):
                key = (msg.topic(), msg.partition())
                if msg.error():
                    continue
                offsets[key][msg.value()].append(msg.offset())
                if msg.offset() + 1 >= ends[key]:
                    pending.discard(key)
        return {key: sorted(o for o in by_value.values() if len(o) > 1)
                for key, by_value in offsets.items()
                if any(len(o) > 1 for o in by_value.values())}
    finally:
        reader.close()
