"""librdkafka client configuration from the typed Config, shared by every Kafka client."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException

from common.config import Config

ClientKind = Literal["producer", "consumer", "admin"]

# One exit code for producer, consumer and backfill when the broker refuses the client
# (README, "Authentication and encryption").
KAFKA_AUTH_EXIT_CODE = 6

# librdkafka retries these for ever, but the same credentials or the same CA will not work
# the next time: a wrong SASL password or mechanism, a certificate that does not verify.
_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                      KafkaError._SSL})


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


def kafka_error_of(exc: KafkaException) -> KafkaError | None:
    """The ``KafkaError`` a ``KafkaException`` carries (confluent-kafka puts it in
    ``args[0]``), or None when it carries something else."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def kafka_error_code(exc: KafkaException) -> int | None:
    """The code of the ``KafkaError`` in ``exc`` (``KafkaError.TOPIC_ALREADY_EXISTS``, ...),
    or None."""
    err = kafka_error_of(exc)
    return None if err is None else err.code()


def kafka_error_text(exc: KafkaException) -> str:
    """librdkafka's own words for ``exc``, for a one-line error message."""
    err = kafka_error_of(exc)
    return str(exc) if err is None else err.str()


def refused_as_too_large(exc: KafkaException) -> bool:
    """``produce()`` refused the record for exceeding ``message.max.bytes`` (bad input,
    not a producer that is unusable)."""
    return kafka_error_code(exc) == KafkaError.MSG_SIZE_TOO_LARGE


# What a broker answers for a group's offsets while the group's coordinator is not up yet
# (just after a broker start or a coordinator move); librdkafka does not always flag them
# retriable on the error it raises from committed().
_COORDINATOR_NOT_READY = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT})


def worth_asking_again(exc: KafkaException) -> bool:
    """A group-offsets request failed in a way that the same request may soon succeed
    (coordinator not ready, timeout, or an error librdkafka marks retriable)."""
    err = kafka_error_of(exc)
    return err is not None and (err.retriable() or err.code() in _COORDINATOR_NOT_READY)


def silent_logger(name: str) -> logging.Logger:
    """A logger that drops librdkafka's reconnect chatter, for short-lived admin clients
    whose caller reports the outcome itself in one line."""
    quiet = logging.getLogger(name)
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return quiet


class KafkaAuthError(RuntimeError):
    """The broker refused our credentials or our TLS settings; one line for the user."""


def refused_by_broker(err: KafkaError) -> bool:
    """An authentication or TLS failure: a config error, not an outage to wait out."""
    return err.code() in _REFUSED


class AuthWatch:
    """Remembers the first refusal reported to a client's ``error_cb``.

    Call it from the callback (it says whether ``err`` was a refusal); :meth:`check`
    raises :class:`KafkaAuthError` with the line to print once one was seen.
    """

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.failure: str | None = None

    def __call__(self, err: KafkaError) -> bool:
        if not refused_by_broker(err):
            return False
        if self.failure is None:
            self.failure = (f"Kafka at {self.bootstrap_servers} refused the client: "
                            f"{err.str()} (check security.protocol, sasl.mechanism, "
                            "sasl.username, sasl.password and ssl.ca.location in "
                            "kafka.properties)")
        return True

    def check(self) -> None:
        if self.failure is not None:
            raise KafkaAuthError(self.failure)


class _MetadataClient(Protocol):
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def poll(self, timeout: float = ...) -> Any: ...


def fetch_metadata(client: _MetadataClient, watch: AuthWatch, timeout_s: float) -> Any:
    """``list_topics`` of a producer or an admin client (a consumer's ``poll`` would take a
    message) within ``timeout_s``; a refusal seen meanwhile raises :class:`KafkaAuthError`
    at once instead of waiting the whole time out.

    The request runs whole on a thread of its own while this one serves ``error_cb``:
    cut into shorter ``list_topics`` calls it can answer with metadata that does not show
    topics created a moment before.
    """
    outcome: dict[str, Any] = {}

    def ask() -> None:
        try:
            outcome["metadata"] = client.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            outcome["error"] = exc

    # a daemon: after a refusal nobody waits for the request's own time out
    asker = threading.Thread(target=ask, name="kafka-metadata", daemon=True)
    asker.start()
    while asker.is_alive():
        asker.join(0.1)
        client.poll(0)  # serves error_cb, where a refusal is reported
        watch.check()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["metadata"]
