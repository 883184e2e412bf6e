"""The local three-node cluster (``services up --brokers 3``): nodes, topics, doctor.

The pure parts (node config, discovery, replica diagnosis) are checked without servers;
the rest against the session's real cluster (``kafka_cluster``), with a node down.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from common.config import ServicesConfig
from massive_fetcher.doctor import Check, run_checks
from schemas.replication import PartitionReplicas, replication_problems
from schemas.topics import check_topics, describe_topics, ensure_topics
from services.cluster import cluster_size, node_ports, node_properties
from services.native import NativeServices
from tests.support.testkit import make_config
from tests.support.wait import wait_for

# -- pure ---------------------------------------------------------------------------------


def test_node_properties_make_three_voters_with_replication_3(tmp_path: Path) -> None:
    ports = node_ports(ServicesConfig(kafka_port=9092, kafka_controller_port=9093), 3)
    assert ports == [(9092, 9093), (9094, 9095), (9096, 9097)]
    props = dict(line.split("=", 1) for line in
                 node_properties(2, ports, tmp_path / "data").splitlines())
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == ("1@127.0.0.1:9093,2@127.0.0.1:9095,"
                                                 "3@127.0.0.1:9097")
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["min.insync.replicas"] == "2"


def test_cluster_size_is_read_from_the_state_dir(tmp_path: Path) -> None:
    assert cluster_size(tmp_path / "absent") == 1
    (tmp_path / "kafka").mkdir()
    assert cluster_size(tmp_path) == 1
    for node in (1, 2, 3, 5):
        (tmp_path / f"kafka-{node}").mkdir()
    assert cluster_size(tmp_path) == 3


def test_replica_diagnosis_names_the_brokers_and_the_fix() -> None:
    healthy = [PartitionReplicas(p, 1, (1, 2, 3), (1, 2, 3)) for p in range(4)]
    assert replication_problems(healthy, 2) == []
    one_down = [PartitionReplicas(0, 1, (1, 2, 3), (1, 2)),
                PartitionReplicas(1, 2, (2, 3, 1), (2, 1))]
    (under,) = replication_problems(one_down, 2)
    assert under.startswith("2 partition(s) under-replicated")
    assert "broker(s) 3 are down or behind" in under and "services up" in under
    two_down = [PartitionReplicas(0, 1, (1, 2, 3), (1,)),
                PartitionReplicas(1, -1, (2, 3, 1), (2,))]
    offline, blocked, under = replication_problems(two_down, 2)
    assert offline.startswith("1 partition(s) offline, no leader (p1 isr=[2] of [2, 3, 1])")
    assert "start broker(s) 1, 2, 3" in offline and "unclean.leader.election" in offline
    assert blocked.startswith("1 partition(s) have fewer in-sync replicas than "
                              "min.insync.replicas=2")
    assert "pauses on them (nothing is dropped)" in blocked and "broker(s) 2, 3" in blocked


# -- the real cluster ---------------------------------------------------------------------

@pytest.fixture
def cluster(kafka_cluster: NativeServices) -> Iterator[NativeServices]:
    kafka_cluster.up(["kafka"])
    yield kafka_cluster
    kafka_cluster.up(["kafka"])


def _config_file(tmp_path: Path, handle: NativeServices) -> Path:
    s = handle.settings
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"services": {
        "kafka_port": s.kafka_port, "kafka_controller_port": s.kafka_controller_port,
        "marketstore_port": s.marketstore_port, "marketstore_grpc_port":
        s.marketstore_grpc_port, "state_dir": s.state_dir}}))
    return path


@pytest.mark.integration
def test_status_finds_every_node_by_pid(cluster: NativeServices, tmp_path: Path) -> None:
    path = _config_file(tmp_path, cluster)
    done = subprocess.run([sys.executable, "-m", "massive_fetcher", "services", "status",
                           "--config", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for node in cluster.kafka_nodes:
        assert any(line.split()[:4] == [node.name, "running", "pid", str(node.pid())]
                   and line.endswith(node.address) for line in lines), (node.name, lines)
    bad = subprocess.run([sys.executable, "-m", "massive_fetcher", "services", "status",
                          "--brokers", "0", "--config", str(path)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].endswith("--brokers 0 is out of range "
                                                        "(allowed: 1..9)")


@pytest.mark.integration
def test_topics_get_replication_3_and_min_insync_2(cluster: NativeServices) -> None:
    config = make_config(cluster.kafka_bootstrap, cluster.marketstore_url)
    assert config.kafka.replication_factor == 0  # the default: min(3, brokers)
    assert len(ensure_topics(config)) == 4
    for info in describe_topics(config):
        assert info.replication_factor == 3, info.line()
        assert info.configs["min.insync.replicas"] == "2", info.line()
        assert all(len(p.isr) == 3 for p in info.replicas)
    assert check_topics(config) == []


@pytest.mark.integration
def test_doctor_reports_a_node_down_with_the_fix(cluster: NativeServices) -> None:
    config = make_config(cluster.kafka_bootstrap, cluster.marketstore_url)
    ensure_topics(config)
    wait_for(lambda: all(c.ok for c in run_checks(config)), timeout_s=60,
             what="doctor all ok on the whole cluster")

    seen: list[Check] = []

    def every_topic_under_replicated() -> bool:
        seen[:] = [c for c in run_checks(config) if c.name.startswith("replicas ")]
        return len(seen) == 4 and not any(c.ok for c in seen)

    cluster.kill("kafka-3")
    try:
        wait_for(every_topic_under_replicated, timeout_s=120,
                 what="doctor to see broker 3 missing from the ISR")
        for check in seen:
            assert "replicas=3, min ISR=2, min.insync.replicas=2" in check.detail
            assert "under-replicated" in check.detail
            assert "broker(s) 3 are down or behind" in check.detail
            assert "`massive-fetcher services up`" in check.detail
    finally:
        cluster.start("kafka-3")
    wait_for(lambda: all(c.ok for c in run_checks(config)), timeout_s=180,
             what="doctor all ok once broker 3 caught up")
