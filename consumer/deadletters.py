"""The consumer's dead letters: poison messages kept on the dead-letter topic, acknowledged
before the offsets that cover them are committed."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException, Message
from prometheus_client import Counter

from common.config import Config
from common.deadletter import DeadLetterProducer

log = logging.getLogger(__name__)


class DeadLetterError(Exception):
    """The dead-letter topic did not take a message: retry the batch, commit nothing."""


class ConsumerDeadLetters:
    """Sends a message the consumer cannot store, with the original key and value and the
    reason and source position as headers (``common.deadletter``), and counts it by reason."""

    def __init__(self, config: Config, client_id: str, counter: Counter,
                 producer: Any = None) -> None:
        self._producer = DeadLetterProducer(config, client_id, producer)
        self._counter = counter
        self._failed_seen = 0  # delivery failures already reported by confirm()

    @property
    def sent(self) -> int:
        return self._producer.sent

    def send(self, msg: Message, reason: str, exc: Exception) -> None:
        """Queue ``msg`` as a dead letter; a refusal raises :class:`DeadLetterError`."""
        source = {"topic": msg.topic() or "", "partition": msg.partition(),
                  "offset": msg.offset(), "timestamp": msg.timestamp()[1]}
        try:
            self._producer.send(msg.key(), msg.value(), exc, reason, source)
        except KafkaException as kexc:
            raise DeadLetterError(f"dead-letter produce failed: {kexc}") from kexc
        self._counter.labels(reason).inc()
        log.warning("message sent to the dead-letter topic", extra={
            "reason": reason, "error": str(exc), "topic": msg.topic(),
            "partition": msg.partition(), "offset": msg.offset()})

    def confirm(self, timeout_s: float = 30.0) -> None:
        """Raise :class:`DeadLetterError` unless Kafka acknowledged every dead letter sent so
        far; each delivery failure is reported once."""
        unacked = self._producer.flush(timeout_s) if self.sent else 0
        failed = self._producer.failed
        if unacked > 0 or failed > self._failed_seen:
            self._failed_seen = failed
            raise DeadLetterError("dead-letter topic did not acknowledge")

    def close(self) -> None:
        self._producer.flush(5)
