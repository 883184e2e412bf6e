"""The same handle as ``NativeServices``, over testcontainers, for machines with a Docker engine.

Host ports are chosen before the containers start and bound fixed, for two reasons: Kafka
must advertise the address clients use (only known after a random mapping otherwise), and a
MarketStore container killed and started again keeps the same URL (Docker would pick a new
random port on restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.config import ServicesConfig
from services.base import ServiceError
from services.probes import kafka_answers, marketstore_answers, registry_answers
from services.process import free_port, poll_until

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

KAFKA_IMAGE = "apache/kafka:{version}"
MARKETSTORE_IMAGE = "alpacamarkets/marketstore:{version}"
# compose.yaml's registry profile uses the same image
REGISTRY_IMAGE = "confluentinc/cp-schema-registry:7.9.1"
# Kafka's listener for a registry sharing its network namespace (it needs a broker address
# that works from inside; the host-side one does not).
INTERNAL_PORT = 29092


def docker_available(timeout_s: float = 3.0) -> bool:
    """True when a Docker engine answers a ping (the client library alone is not enough)."""
    try:
        import docker
        client = docker.from_env(timeout=int(timeout_s))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no socket, no permission, no library: all mean "no Docker here"
        return False


def kafka_environment(advertised: str, heap: str) -> dict[str, str]:
    """apache/kafka's single-node KRaft settings, advertising the host-side address."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://:9092,CONTROLLER://:9093,INTERNAL://:{INTERNAL_PORT}",
        "KAFKA_ADVERTISED_LISTENERS": (f"PLAINTEXT://{advertised},"
                                       f"INTERNAL://localhost:{INTERNAL_PORT}"),
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": ("CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                                                 "INTERNAL:PLAINTEXT"),
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_HEAP_OPTS": f"-Xmx{heap}",
    }


class ContainerServices:
    """Kafka and MarketStore containers; ``down`` removes them (and their data)."""

    def __init__(self, settings: ServicesConfig, *, kafka_image: str | None = None,
                 marketstore_image: str | None = None,
                 startup_timeout_s: float = 180.0) -> None:
        self.settings = settings
        self.kafka_image = kafka_image or KAFKA_IMAGE.format(version=settings.kafka_version)
        self.marketstore_image = marketstore_image or MARKETSTORE_IMAGE.format(
            version=settings.marketstore_version)
        self.startup_timeout_s = startup_timeout_s
        self._kafka: DockerContainer | None = None
        self._marketstore: DockerContainer | None = None
        self._registry: DockerContainer | None = None
        self._registry_port = 0
        self._host = "127.0.0.1"
        self._kafka_port = 0
        self._marketstore_port = 0

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self._host}:{self._kafka_port}"

    @property
    def marketstore_url(self) -> str:
        return f"http://{self._host}:{self._marketstore_port}/rpc"

    def up(self) -> None:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.docker_client import DockerClient

        self._host = DockerClient().host()
        self._kafka_port = free_port()
        self._marketstore_port = free_port()
        self._registry_port = free_port()
        try:
            self._kafka = (
                DockerContainer(self.kafka_image)
                .with_bind_ports(9092, self._kafka_port)
                # published here: a registry started later shares this container's network
                .with_bind_ports(8081, self._registry_port)
                .with_envs(**kafka_environment(self.kafka_bootstrap, self.settings.kafka_heap))
            )
            self._kafka.start()
            self._marketstore = (DockerContainer(self.marketstore_image)
                                 .with_bind_ports(5993, self._marketstore_port))
            self._marketstore.start()
            self._wait("kafka", self._kafka, lambda: kafka_answers(self.kafka_bootstrap))
            self._wait_marketstore()
        except BaseException:
            self.down()
            raise

    def _wait(self, name: str, container: DockerContainer, check: Callable[[], bool]) -> None:
        began = time.monotonic()
        if poll_until(check, self.startup_timeout_s, interval_s=0.5):
            return
        stdout, stderr = container.get_logs()
        text = (stdout + stderr).decode(errors="replace").splitlines()[-30:]
        raise ServiceError(f"{name} container ({container.image}) did not answer within "
                           f"{time.monotonic() - began:.0f}s; last log lines:\n"
                           + "\n".join(text))

    def _wait_marketstore(self) -> None:
        assert self._marketstore is not None
        self._wait("marketstore", self._marketstore,
                   lambda: marketstore_answers(self.marketstore_url))

    def kill_marketstore(self) -> None:
        """SIGKILL the MarketStore container's server; its filesystem (data) stays."""
        if self._marketstore is None:
            raise ServiceError("marketstore container is not running")
        wrapped = self._marketstore.get_wrapped_container()
        wrapped.kill()
        wrapped.wait(timeout=30)

    def start_marketstore(self) -> None:
        """Start the same container again (same data, same host port) and wait for RPC."""
        if self._marketstore is None:
            raise ServiceError("marketstore container was never started")
        wrapped = self._marketstore.get_wrapped_container()
        wrapped.reload()
        if wrapped.status != "running":
            wrapped.start()
        self._wait_marketstore()

    def restart_marketstore(self) -> None:
        self.kill_marketstore()
        self.start_marketstore()

    @property
    def registry_url(self) -> str:
        return f"http://{self._host}:{self._registry_port}"

    def start_registry(self) -> str:
        """Confluent's registry in Kafka's network namespace; returns its URL once it answers."""
        from testcontainers.core.container import DockerContainer

        if self._kafka is None:
            raise ServiceError("start_registry needs the Kafka container running")
        if self._registry is None:
            kafka_id = self._kafka.get_wrapped_container().id
            self._registry = (
                DockerContainer(REGISTRY_IMAGE)
                .with_kwargs(network_mode=f"container:{kafka_id}")
                .with_envs(SCHEMA_REGISTRY_HOST_NAME="localhost",
                           SCHEMA_REGISTRY_LISTENERS="http://0.0.0.0:8081",
                           SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS=(
                               f"PLAINTEXT://localhost:{INTERNAL_PORT}"),
                           SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR="1"))
            self._registry.start()
        self._wait("registry", self._registry, lambda: registry_answers(self.registry_url))
        return self.registry_url

    def stop_registry(self) -> None:
        if self._registry is not None:
            self._registry.stop()
        self._registry = None

    def down(self) -> None:
        self.stop_registry()
        for container in (self._marketstore, self._kafka):
            if container is not None:
                container.stop()
        self._kafka = self._marketstore = None
