"""Create and describe the bars/trades/quotes/dead-letter topics.

Every topic gets the configured partition count and replication factor (by default
min(3, brokers), with ``min.insync.replicas=2`` at three: the ``acks=all`` producer then
survives one broker down and never has a record acknowledged by one copy only), unlimited
retention (``retention.ms=-1``, ``retention.bytes=-1``: replaying the topics rebuilds the
database) and ``compression.type`` from ``kafka.compression`` (the producer compresses with
the same codec, so the broker stores batches as they arrive). Existing topics are never
altered: :func:`check_topics` reports where they differ from the config instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from common.config import Config
from common.kafka import (
    AuthWatch,
    fetch_metadata,
    kafka_client_config,
    kafka_error_code,
    kafka_error_text,
    silent_logger,
)
from schemas.replication import PartitionReplicas, min_insync_for, replication_for

# The topic settings this module manages (and reports).
MANAGED_CONFIGS: tuple[str, ...] = ("retention.ms", "retention.bytes", "compression.type",
                                    "min.insync.replicas")

# librdkafka's connection chatter; failures surface as exceptions
_quiet = silent_logger("schemas.topics.librdkafka")

# A key's partition is its hash modulo the partition count: another count moves most
# symbols, and for a while a bucket would get records from its old partition (not yet
# consumed) and its new one, two writers where exactly once needs one.
REPARTITION_ADVICE = (
    "changing the partition count re-homes symbols to other partitions, and a bucket fed "
    "from two partitions can get rows twice or lose them; either set kafka.partitions to "
    "{current}, or: stop producers and backfills, let the consumers drain to zero lag "
    "(massive_fetcher_consumer_lag), stop them, then "
    "`kafka-topics --alter --partitions {wanted}` and start consumers before producers")


class TopicsError(RuntimeError):
    """The broker cannot be reached or refused to create a topic."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    role: str  # bars, trades, quotes or dead_letter
    exists: bool
    partitions: int = 0
    replication_factor: int = 0
    configs: dict[str, str] = field(default_factory=dict)
    replicas: tuple[PartitionReplicas, ...] = ()

    def line(self) -> str:
        if not self.exists:
            return f"{self.name} ({self.role}): missing"
        settings = " ".join(f"{k}={self.configs.get(k, '?')}" for k in MANAGED_CONFIGS)
        return (f"{self.name} ({self.role}): partitions={self.partitions} "
                f"replication={self.replication_factor} {settings}")


def topic_names(config: Config) -> dict[str, str]:
    """role -> topic name, for the four topics the project uses."""
    t = config.kafka.topics
    return {"bars": t.bars, "trades": t.trades, "quotes": t.quotes,
            "dead_letter": t.dead_letter}


def wanted_configs(config: Config, replication: int = 1) -> dict[str, str]:
    """The managed settings of a topic with ``replication`` copies of each partition."""
    compression = config.kafka.compression
    wanted = {"retention.ms": "-1", "retention.bytes": "-1",
              # the broker's name for "no compression" differs from the producer's
              "compression.type": "uncompressed" if compression == "none" else compression}
    if replication >= 3:
        wanted["min.insync.replicas"] = str(min_insync_for(replication))
    return wanted


def wanted_replication(config: Config, brokers: int) -> int:
    """kafka.replication_factor, or min(3, brokers) when it is 0."""
    return config.kafka.replication_factor or replication_for(brokers)


def _admin(config: Config, timeout_s: float) -> tuple[AdminClient, AuthWatch]:
    props = kafka_client_config(config, "admin")
    props.setdefault("logger", _quiet)
    props.setdefault("socket.connection.setup.timeout.ms", int(timeout_s * 1000))
    watch = AuthWatch(config.kafka.bootstrap_servers)
    props["error_cb"] = watch
    return AdminClient(props), watch


def _existing(admin: AdminClient, watch: AuthWatch, config: Config,
              timeout_s: float) -> dict[str, object]:
    return dict(_metadata(admin, watch, config, timeout_s).topics)


def _metadata(admin: AdminClient, watch: AuthWatch, config: Config, timeout_s: float) -> Any:
    """The cluster's metadata; a broker refusing the client raises KafkaAuthError at once."""
    try:
        return fetch_metadata(admin, watch, timeout_s)
    except KafkaException as exc:
        raise TopicsError(f"Kafka at {config.kafka.bootstrap_servers} did not answer within "
                          f"{timeout_s:g}s: {kafka_error_text(exc)}") from None


def ensure_topics(config: Config, timeout_s: float = 15.0) -> list[str]:
    """Create the missing topics; returns the names created (empty when all existed)."""
    admin, watch = _admin(config, timeout_s)
    metadata = _metadata(admin, watch, config, timeout_s)
    existing = metadata.topics
    missing = [name for name in dict.fromkeys(topic_names(config).values())
               if name not in existing]
    if not missing:
        return []
    replication = wanted_replication(config, len(metadata.brokers))
    new = [NewTopic(name, num_partitions=config.kafka.partitions,
                    replication_factor=replication,
                    config=wanted_configs(config, replication)) for name in missing]
    created: list[str] = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if kafka_error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # someone else created it meanwhile: fine
            raise TopicsError(f"cannot create topic {name}: {kafka_error_text(exc)}") from None
        created.append(name)
    _await_leaders(admin, watch, config, created, timeout_s)
    return created


def _await_leaders(admin: AdminClient, watch: AuthWatch, config: Config, names: list[str],
                   timeout_s: float) -> None:
    """Until every partition of ``names`` has a leader in the metadata we get: on a
    cluster, the broker we ask may learn of a new topic a moment after the controller."""
    deadline = time.monotonic() + timeout_s
    while names:
        topics = _metadata(admin, watch, config, timeout_s).topics
        if all(name in topics and topics[name].partitions
               and all(p.leader >= 0 for p in topics[name].partitions.values())
               for name in names):
            return
        if time.monotonic() >= deadline:
            raise TopicsError(f"topics {', '.join(names)} were created but have no leader "
                              f"after {timeout_s:g}s; see `massive-fetcher doctor`")
        time.sleep(0.1)


def describe_topics(config: Config, timeout_s: float = 15.0) -> list[TopicInfo]:
    """Partitions, replication and the managed configs of each topic (bars, trades, quotes,
    dead-letter), ``exists=False`` for a missing one."""
    admin, watch = _admin(config, timeout_s)
    existing = _existing(admin, watch, config, timeout_s)
    names = topic_names(config)
    present = [n for n in dict.fromkeys(names.values()) if n in existing]
    configs = managed_configs(admin, present, timeout_s)
    infos = []
    for role, name in names.items():
        meta = existing.get(name)
        if meta is None:
            infos.append(TopicInfo(name, role, exists=False))
            continue
        partitions = meta.partitions  # type: ignore[attr-defined]
        replication = min((len(p.replicas) for p in partitions.values()), default=0)
        replicas = tuple(PartitionReplicas(p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
                         for p in sorted(partitions.values(), key=lambda p: p.id))
        infos.append(TopicInfo(name, role, True, len(partitions), replication,
                               configs.get(name, {}), replicas))
    return infos


def managed_configs(admin: AdminClient, names: list[str], timeout_s: float
                     ) -> dict[str, dict[str, str]]:
    """The managed configs of topics the metadata listed. The request goes to any broker,
    and one that has not yet applied a just-created topic from the metadata log answers
    "unknown topic" for a moment: that is asked again until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    configs: dict[str, dict[str, str]] = {}
    todo = list(names)
    while todo:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in todo]
        todo = []
        for resource, future in admin.describe_configs(
                resources, request_timeout=timeout_s).items():
            try:
                entries = future.result(timeout=timeout_s)
            except KafkaException as exc:
                if (kafka_error_code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART
                        and time.monotonic() < deadline):
                    todo.append(resource.name)
                    continue
                raise TopicsError(f"cannot describe topic {resource.name}: "
                                  f"{kafka_error_text(exc)}") from None
            except TimeoutError:  # e.g. the request went to a broker that just died
                raise TopicsError(f"cannot describe topic {resource.name}: no answer within "
                                  f"{timeout_s:g}s") from None
            configs[resource.name] = {k: str(v.value) for k, v in entries.items()
                                      if k in MANAGED_CONFIGS}
        if todo:
            time.sleep(0.1)
    return configs


def check_topics(config: Config, timeout_s: float = 15.0,
                 infos: list[TopicInfo] | None = None) -> list[str]:
    """What differs from the config, one sentence each with the fix (empty: all good).

    ``infos``: a :func:`describe_topics` result to check instead of asking the broker again.
    """
    problems = []
    for info in describe_topics(config, timeout_s) if infos is None else infos:
        wanted = wanted_configs(config, info.replication_factor)
        if not info.exists:
            problems.append(f"topic {info.name} ({info.role}) is missing: "
                            "run `massive-fetcher topics create`")
            continue
        if info.partitions < config.kafka.partitions:
            advice = REPARTITION_ADVICE.format(current=info.partitions,
                                               wanted=config.kafka.partitions)
            problems.append(f"topic {info.name} has {info.partitions} partitions, the config "
                            f"asks for {config.kafka.partitions}: {advice}")
        for key, value in wanted.items():
            if info.configs.get(key) != value:
                problems.append(f"topic {info.name} has {key}={info.configs.get(key)}, "
                                f"expected {value} (kafka-configs --alter --add-config "
                                f"{key}={value})")
    return problems
