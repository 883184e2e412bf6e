"""``replay``'s guard: a replay never writes the MarketStore a live consumer group writes.

Exactly once in MarketStore rests on one writer per bucket (``consumer/sink.py``): a
writer trusts its cached tail of a bucket. A replay is a second consumer group; beside the
live group (``consumer.group_id``) on the same MarketStore, both would write the same
buckets, each from its own tail, and rows would be written twice. So a replay into the
configured MarketStore starts only while the live group has no members; a replay with
``--target-marketstore URL`` rebuilds into another MarketStore (swap it in afterwards)
whatever the live group does. The check runs once, at start: a live consumer started
during a replay into its own MarketStore is not caught.
"""

from __future__ import annotations

import time
from dataclasses import replace

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from common.config import Config
from common.kafka import kafka_client_config, kafka_error_of, silent_logger

REFUSED_EXIT_CODE = 3


class ReplayRefused(Exception):
    """The replay would race the live group, or the group cannot be checked: one line,
    exit code :data:`REFUSED_EXIT_CODE`."""


def live_members(config: Config, group_id: str, timeout_s: float) -> int:
    """How many members the consumer group ``group_id`` has now (0: none, or no such group).

    A broker answers the first group request after its start with a coordinator still
    loading (or a timeout), so errors are retried until ``timeout_s``; then
    :class:`ReplayRefused` with the last one.
    """
    admin = AdminClient(kafka_client_config(config, "admin"),
                        logger=silent_logger("consumer.replayguard.librdkafka"))
    deadline = time.monotonic() + timeout_s
    while True:
        attempt_s = max(1.0, min(5.0, deadline - time.monotonic()))
        future = admin.describe_consumer_groups([group_id],
                                                request_timeout=attempt_s)[group_id]
        try:
            # librdkafka ends the request at request_timeout; the margin only guards a hang
            return len(future.result(timeout=attempt_s + 5).members)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            if err is not None and err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return 0
            reason = str(exc) if err is None else f"{err.name()}: {err.str()}"
        except TimeoutError:
            reason = f"no answer from {config.kafka.bootstrap_servers}"
        if time.monotonic() + 0.5 >= deadline:
            raise ReplayRefused(f"cannot tell whether the live consumer group {group_id!r} "
                                f"is running ({reason}, for {timeout_s:g}s); not replaying")
        time.sleep(0.5)


def replay_config(config: Config, target_marketstore: str | None,
                  timeout_s: float = 30.0) -> Config:
    """The config a replay writes with: aimed at ``target_marketstore`` when given (it
    must be another MarketStore), else ``config`` once the live group is seen idle;
    :class:`ReplayRefused` otherwise."""
    live = config.consumer.group_id
    if target_marketstore:
        if _same_url(target_marketstore, config.marketstore.url):
            raise ReplayRefused(f"--target-marketstore {target_marketstore} is the "
                                f"MarketStore the live consumer group {live!r} writes; "
                                "give another one")
        return config.replace(marketstore=replace(config.marketstore, url=target_marketstore))
    members = live_members(config, live, timeout_s)
    if members:
        raise ReplayRefused(
            f"the live consumer group {live!r} has {members} member(s) writing "
            f"{config.marketstore.url}; a replay beside it would write rows twice. Stop "
            "the consumers first, or rebuild elsewhere with --target-marketstore URL")
    return config


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()
