"""librdkafka client configuration from the typed Config, shared by every Kafka client."""

from __future__ import annotations

import logging
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException

from common.config import Config

ClientKind = Literal["producer", "consumer", "admin"]


def kafka_client_config(config: Config, kind: ClientKind) -> dict[str, Any]:
    """``bootstrap.servers`` + ``kafka.properties`` + ``kafka.producer``/``kafka.consumer``.

    Later entries win, so a per-kind setting overrides a common one. Admin clients get the
    common properties only. Defaults tuned for one part (acks, linger, group ids) belong to
    that part, applied before these so the config file can still override them.
    """
    if kind not in ("producer", "consumer", "admin"):
        raise ValueError(f"unknown Kafka client kind {kind!r}")
    props: dict[str, Any] = {"bootstrap.servers": config.kafka.bootstrap_servers}
    props.update(config.kafka.properties)
    if kind == "producer":
        props.update(config.kafka.producer)
    elif kind == "consumer":
        props.update(config.kafka.consumer)
    return props


def refused_as_too_large(exc: KafkaException) -> bool:
    """``produce()`` refused the record for exceeding ``message.max.bytes`` (bad input,
    not a producer that is unusable)."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE


# What a broker answers for a group's offsets while the group's coordinator is not up yet
# (just after a broker start or a coordinator move); librdkafka does not always flag them
# retriable on the error it raises from committed().
_COORDINATOR_NOT_READY = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT})


def worth_asking_again(exc: KafkaException) -> bool:
    """A group-offsets request failed in a way that the same request may soon succeed
    (coordinator not ready, timeout, or an error librdkafka marks retriable)."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and (err.retriable()
                                            or err.code() in _COORDINATOR_NOT_READY)


def silent_logger(name: str) -> logging.Logger:
    """A logger that drops librdkafka's reconnect chatter, for short-lived admin clients
    whose caller reports the outcome itself in one line."""
    quiet = logging.getLogger(name)
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return quiet
