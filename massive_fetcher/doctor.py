"""``massive-fetcher doctor``: is everything the pipeline needs reachable and set up?

One line per check, ``ok`` or ``FAIL`` with what to fix; exit code 1 when any check fails.
Checks: the Kafka broker, the four topics (existence, partitions, retention, compression),
their replicas (offline and under-replicated partitions, the ISR, min.insync.replicas),
the schema registry when one is configured, and MarketStore's RPC endpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient

from common.config import Config
from common.kafka import (
    AuthWatch,
    KafkaAuthError,
    fetch_metadata,
    kafka_client_config,
    silent_logger,
)
from massive_fetcher.cli import POSITIVE_FLOAT, add_config_argument, config_from_args
from schemas.replication import replication_problems, replication_summary
from schemas.topics import TopicInfo, TopicsError, check_topics, describe_topics


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def check_broker(config: Config, timeout_s: float) -> Check:
    props = kafka_client_config(config, "admin")
    props.setdefault("socket.connection.setup.timeout.ms", int(timeout_s * 1000))
    watch = AuthWatch(config.kafka.bootstrap_servers)
    props["error_cb"] = watch
    # librdkafka's reconnect chatter would bury the one line per check
    admin = AdminClient(props, logger=silent_logger("massive_fetcher.doctor.librdkafka"))
    try:
        metadata = fetch_metadata(admin, watch, timeout_s)
    except KafkaAuthError as exc:
        return Check("kafka", False, str(exc))
    except Exception as exc:  # librdkafka reports an unreachable broker as a KafkaException
        return Check("kafka", False, f"no broker answers at {config.kafka.bootstrap_servers} "
                     f"({exc}); start it (`massive-fetcher services up`) or fix "
                     "kafka.bootstrap_servers / KAFKA_BOOTSTRAP_SERVERS")
    return Check("kafka", True, f"{len(metadata.brokers)} broker(s) at "
                 f"{config.kafka.bootstrap_servers}")


def check_topic_setup(config: Config, timeout_s: float) -> list[Check]:
    try:
        infos = describe_topics(config, timeout_s)
        problems = check_topics(config, timeout_s, infos=infos)
    except TopicsError as exc:
        return [Check("topics", False, str(exc))]
    checks = []
    for info in infos:
        mine = [p for p in problems if f"topic {info.name} " in p]
        if mine:
            checks.append(Check(f"topic {info.role}", False, "; ".join(mine)))
        else:
            checks.append(Check(f"topic {info.role}", True, info.line()))
    checks += [check_replicas(info) for info in infos if info.exists]
    return checks


def check_replicas(info: TopicInfo) -> Check:
    """Offline and under-replicated partitions, the ISR against min.insync.replicas."""
    min_insync = int(info.configs.get("min.insync.replicas") or 1)
    problems = replication_problems(info.replicas, min_insync)
    summary = replication_summary(info.replicas, min_insync)
    name = f"replicas {info.role}"
    if problems:
        return Check(name, False, f"{info.name}: {summary}; " + "; ".join(problems))
    return Check(name, True, f"{info.name}: {summary}, every replica in sync")


def check_registry(config: Config, timeout_s: float) -> Check | None:
    if not config.schema_registry.url:
        return None
    from schemas.registry import Registry, RegistryError

    registry = Registry(dataclasses.replace(config.schema_registry, timeout_s=timeout_s))
    try:
        subjects = registry.subjects()
    except RegistryError as exc:
        return Check("schema registry", False, f"{exc}; start it or fix schema_registry.url / "
                     "SCHEMA_REGISTRY_URL and its credentials")
    finally:
        registry.close()
    return Check("schema registry", True, f"{registry.url} ({len(subjects)} subjects)")


def check_marketstore(config: Config, timeout_s: float) -> Check:
    import pymarketstore as pymkts  # pandas under it: only when the check runs

    url = config.marketstore.url
    try:
        # list_symbols is the cheapest RPC that proves the server answers DataService calls.
        symbols = pymkts.Client(url).list_symbols()
    except Exception as exc:  # requests raises ConnectionError; pymarketstore wraps others
        return Check("marketstore", False, f"no MarketStore answers at {url} ({type(exc).__name__}"
                     "); start it (`massive-fetcher services up`) or fix marketstore.url / "
                     "MARKETSTORE_URL")
    return Check("marketstore", True, f"{url} ({len(symbols)} symbols stored)")


def run_checks(config: Config, timeout_s: float = 5.0) -> list[Check]:
    checks = [check_broker(config, timeout_s)]
    if checks[0].ok:
        checks += check_topic_setup(config, timeout_s)
    else:
        checks.append(Check("topics", False, "skipped: the broker is unreachable"))
    registry = check_registry(config, timeout_s)
    if registry is not None:
        checks.append(registry)
    checks.append(check_marketstore(config, timeout_s))
    checks.append(check_native())
    return checks


def check_native() -> Check:
    """The compiled hot paths: without them everything works, several times slower."""
    from schemas.native import status

    active, detail = status()
    return Check("native paths", active, detail)


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    config = config_from_args(args)
    checks = run_checks(config, args.timeout)
    for check in checks:
        echo(check.line())
    return 0 if all(c.ok for c in checks) else 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "doctor",
        description="Check the broker, the topics (existence, partitions, retention, "
                    "compression), the schema registry (when configured) and MarketStore; "
                    "one line per check with what to fix. Exit code 1 when a check fails.")
    add_config_argument(parser)
    parser.add_argument("--timeout", type=POSITIVE_FLOAT, default=5.0, metavar="SECONDS",
                        help="per-check timeout (5)")
    parser.set_defaults(func=run)
