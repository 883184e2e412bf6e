"""A local KRaft cluster: N nodes, each broker and controller at once, each a KafkaService.

Combined nodes keep a three-voter quorum in three JVMs, which is what fits a small machine;
node ``i`` (from 1) lives in ``<state>/kafka-<i>`` with its own pid file, and all share one
cluster id. Nodes beyond the first listen on the configured ports plus ``PORT_STEP * (i-1)``
unless a caller (the tests) hands out ports itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.config import ServicesConfig
from schemas.replication import min_insync_for, replication_for
from services.base import HOST
from services.kafka import KafkaService, server_properties

PORT_STEP = 2  # 9092/9093, 9094/9095, 9096/9097
MAX_BROKERS = 9
NODE_DIR = re.compile(r"^kafka-(\d+)$")
CLUSTER_ID_FILE = "kafka-cluster.id"


def node_ports(settings: ServicesConfig, brokers: int) -> list[tuple[int, int]]:
    """(client port, controller port) of each node, from the configured first pair."""
    return [(settings.kafka_port + PORT_STEP * i, settings.kafka_controller_port + PORT_STEP * i)
            for i in range(brokers)]


def cluster_size(state_dir: Path) -> int:
    """How many nodes ``up --brokers N`` created under ``state_dir`` (1: none, a single
    broker), so ``status`` and ``down`` cover every node without being told."""
    if not state_dir.is_dir():
        return 1
    ids = {int(m.group(1)) for entry in state_dir.iterdir()
           if entry.is_dir() and (m := NODE_DIR.match(entry.name))}
    size = 0
    while size + 1 in ids:
        size += 1
    return size if size > 1 else 1


def node_properties(node_id: int, ports: list[tuple[int, int]], data_dir: Path) -> str:
    """The single node's server.properties, turned into node ``node_id`` of the cluster."""
    port, controller_port = ports[node_id - 1]
    lines = dict(line.split("=", 1)
                 for line in server_properties(port, controller_port, data_dir).splitlines()
                 if "=" in line and not line.startswith("#"))
    replication = replication_for(len(ports))
    min_isr = min_insync_for(replication)
    lines.update({
        "node.id": str(node_id),
        "controller.quorum.voters": ",".join(f"{i}@{HOST}:{c}"
                                             for i, (_, c) in enumerate(ports, start=1)),
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replication),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
    })
    return "".join(f"{key}={value}\n" for key, value in lines.items())


class KafkaNode(KafkaService):
    """One node of the cluster: its own home, ports and pid; the jars and cluster id shared."""

    def __init__(self, settings: ServicesConfig, state_dir: Path, cache_dir: Path,
                 node_id: int, ports: list[tuple[int, int]],
                 die_with_parent: bool = False) -> None:
        self.name = f"kafka-{node_id}"  # type: ignore[misc]  # per instance: the home dir
        super().__init__(settings, state_dir, cache_dir, die_with_parent)
        self.node_id = node_id
        self.cluster_ports = ports
        self.cluster_id_file = state_dir / CLUSTER_ID_FILE

    @property
    def address(self) -> str:
        return f"{HOST}:{self.cluster_ports[self.node_id - 1][0]}"

    def ports(self) -> list[int]:
        return list(self.cluster_ports[self.node_id - 1])

    def server_config(self) -> str:
        return node_properties(self.node_id, self.cluster_ports, self.data_dir)


def cluster_nodes(settings: ServicesConfig, state_dir: Path, cache_dir: Path, brokers: int,
                  ports: list[tuple[int, int]] | None = None,
                  die_with_parent: bool = False) -> list[KafkaService]:
    """The Kafka services of a deployment: the single broker, or the nodes of a cluster."""
    if brokers == 1 and ports is None:
        return [KafkaService(settings, state_dir, cache_dir, die_with_parent)]
    ports = ports or node_ports(settings, brokers)
    if len(ports) != brokers:
        raise ValueError(f"{brokers} brokers need {brokers} port pairs, got {len(ports)}")
    return [KafkaNode(settings, state_dir, cache_dir, i, ports, die_with_parent)
            for i in range(1, brokers + 1)]
