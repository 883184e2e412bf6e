"""Dead letters: what a part cannot store, kept on ``kafka.topics.dead_letter`` with why.

One convention for every part that writes them (the consumer, the backfill): the original
key (the symbol), the original value (a Kafka record's bytes, or a REST result's JSON),
and headers ``error``, ``error.class``, ``error.reason`` followed by ``source.*`` headers
saying where it came from (``source.topic``/``partition``/``offset``/``timestamp`` for a
Kafka record, ``source.window``/``source.path`` for a REST result). A value too large to
copy once the headers are added (over ``message.max.bytes``) is left out, with a
``value.omitted.bytes`` header.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from common.config import Config
from common.kafka import kafka_client_config, refused_as_too_large

# confluent-kafka's list form of a record's headers
Headers = list[tuple[str, str | bytes | None]]

DEFAULT_PROPERTIES: dict[str, Any] = {"enable.idempotence": True, "linger.ms": 5}


def dead_letter_properties(config: Config, client_id: str) -> dict[str, Any]:
    """librdkafka properties of a dead-letter producer: idempotent, short linger, then the
    config's ``kafka.properties`` and ``kafka.producer``; its log lines go through logging
    (JSON, redacted) like every other client's, not raw to stderr."""
    return {**DEFAULT_PROPERTIES, **kafka_client_config(config, "producer"),
            "client.id": client_id, "logger": logging.getLogger(f"librdkafka.{client_id}")}


def dead_letter_headers(exc: BaseException, reason: str,
                        source: Mapping[str, object]) -> Headers:
    """``error``, ``error.class``, ``error.reason``, then ``source.<name>`` per item."""
    headers: Headers = [("error", str(exc).encode()),
                        ("error.class", type(exc).__name__.encode()),
                        ("error.reason", reason.encode())]
    headers += [(f"source.{name}", str(value).encode()) for name, value in source.items()]
    return headers


def produce_dead_letter(producer: Producer, topic: str, key: bytes | str | None,
                        value: bytes | None, headers: Headers,
                        on_delivery: Callable[[KafkaError | None, Any], None]) -> None:
    """Queue one dead letter, waiting while the local queue is full.

    A value refused as too large is left out (``value.omitted.bytes`` is appended to
    ``headers``); any other refusal is raised as the ``KafkaException``.
    """
    while True:
        try:
            producer.produce(topic, value=value, key=key, headers=headers,
                             on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)
        except KafkaException as exc:
            if value is None or not refused_as_too_large(exc):
                raise
            headers.append(("value.omitted.bytes", str(len(value)).encode()))
            value = None


class DeadLetterProducer:
    """A part's own dead-letter producer, with delivery accounting.

    ``sent`` counts the dead letters queued, ``failed`` those Kafka did not acknowledge
    after librdkafka's retries; ``flush`` returns how many are still unacknowledged. Safe
    to call from several threads (the counters are updated under a lock).
    """

    def __init__(self, config: Config, client_id: str, producer: Any = None) -> None:
        self.topic = config.kafka.topics.dead_letter
        self._producer = producer if producer is not None else Producer(
            dead_letter_properties(config, client_id))
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def send(self, key: bytes | str | None, value: bytes | None, exc: BaseException,
             reason: str, source: Mapping[str, object]) -> None:
        """Queue one dead letter (see :func:`produce_dead_letter`)."""
        produce_dead_letter(self._producer, self.topic, key, value,
                            dead_letter_headers(exc, reason, source), self._on_delivery)
        with self._lock:
            self.sent += 1

    def flush(self, timeout_s: float = 30.0) -> int:
        return self._producer.flush(timeout_s)

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            with self._lock:
                self.failed += 1
