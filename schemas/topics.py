"""Create and describe the bars/trades/quotes/dead-letter topics.

Every topic gets the configured partition count and replication factor, unlimited
retention (``retention.ms=-1``, ``retention.bytes=-1``: replaying the topics rebuilds the
database) and ``compression.type`` from ``kafka.compression`` (the producer compresses with
the same codec, so the broker stores batches as they arrive). Existing topics are never
altered: :func:`check_topics` reports where they differ from the config instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from common.config import Config
from common.kafka import AuthWatch, fetch_metadata, kafka_client_config, silent_logger

# The topic settings this module manages (and reports).
MANAGED_CONFIGS: tuple[str, ...] = ("retention.ms", "retention.bytes", "compression.type")

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

    def line(self) -> str:
        if not self.exists:
            return f"{self.name} ({self.role}): missing"
        settings = " ".join(f"{k}={self.configs.get(k, '?')}" for k in MANAGED_CONFIGS)
        return (f"{self.name} ({self.role}): partitions={self.partitions} "
                f"replication={self.replication_factor} {settings}")


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def topic_names(config: Config) -> dict[str, str]:
    """role -> topic name, for the four topics the project uses."""
    t = config.kafka.topics
    return {"bars": t.bars, "trades": t.trades, "quotes": t.quotes,
            "dead_letter": t.dead_letter}


def wanted_configs(config: Config) -> dict[str, str]:
    compression = config.kafka.compression
    return {"retention.ms": "-1", "retention.bytes": "-1",
            # the broker's name for "no compression" differs from the producer's
            "compression.type": "uncompressed" if compression == "none" else compression}


def _admin(config: Config, timeout_s: float) -> tuple[AdminClient, AuthWatch]:
    props = kafka_client_config(config, "admin")
    props.setdefault("logger", _quiet)
    props.setdefault("socket.connection.setup.timeout.ms", int(timeout_s * 1000))
    watch = AuthWatch(config.kafka.bootstrap_servers)
    props["error_cb"] = watch
    return AdminClient(props), watch


def _existing(admin: AdminClient, watch: AuthWatch, config: Config,
              timeout_s: float) -> dict[str, object]:
    """The cluster's topics; a broker refusing the client raises KafkaAuthError at once."""
    try:
        return dict(fetch_metadata(admin, watch, timeout_s).topics)
    except KafkaException as exc:
        raise TopicsError(f"Kafka at {config.kafka.bootstrap_servers} did not answer within "
                          f"{timeout_s:g}s: {_reason(exc)}") from None


def ensure_topics(config: Config, timeout_s: float = 15.0) -> list[str]:
    """Create the missing topics; returns the names created (empty when all existed)."""
    admin, watch = _admin(config, timeout_s)
    existing = _existing(admin, watch, config, timeout_s)
    missing = [name for name in dict.fromkeys(topic_names(config).values())
               if name not in existing]
    if not missing:
        return []
    new = [NewTopic(name, num_partitions=config.kafka.partitions,
                    replication_factor=config.kafka.replication_factor,
                    config=wanted_configs(config)) for name in missing]
    created: list[str] = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # someone else created it meanwhile: fine
            raise TopicsError(f"cannot create topic {name}: {_reason(exc)}") from None
        created.append(name)
    return created


def describe_topics(config: Config, timeout_s: float = 15.0) -> list[TopicInfo]:
    """Partitions, replication and the managed configs of each topic (bars, trades, quotes,
    dead-letter), ``exists=False`` for a missing one."""
    admin, watch = _admin(config, timeout_s)
    existing = _existing(admin, watch, config, timeout_s)
    names = topic_names(config)
    present = [n for n in dict.fromkeys(names.values()) if n in existing]
    configs: dict[str, dict[str, str]] = {}
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present]
        for resource, future in admin.describe_configs(
                resources, request_timeout=timeout_s).items():
            try:
                entries = future.result(timeout=timeout_s)
            except KafkaException as exc:
                raise TopicsError(f"cannot describe topic {resource.name}: "
                                  f"{_reason(exc)}") from None
            configs[resource.name] = {k: str(v.value) for k, v in entries.items()
                                      if k in MANAGED_CONFIGS}
    infos = []
    for role, name in names.items():
        meta = existing.get(name)
        if meta is None:
            infos.append(TopicInfo(name, role, exists=False))
            continue
        partitions = meta.partitions  # type: ignore[attr-defined]
        replication = min((len(p.replicas) for p in partitions.values()), default=0)
        infos.append(TopicInfo(name, role, True, len(partitions), replication,
                               configs.get(name, {})))
    return infos


def check_topics(config: Config, timeout_s: float = 15.0,
                 infos: list[TopicInfo] | None = None) -> list[str]:
    """What differs from the config, one sentence each with the fix (empty: all good).

    ``infos``: a :func:`describe_topics` result to check instead of asking the broker again.
    """
    problems = []
    wanted = wanted_configs(config)
    for info in describe_topics(config, timeout_s) if infos is None else infos:
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
