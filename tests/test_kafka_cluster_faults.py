"""Broker faults on a real three-node cluster (replication 3, min.insync.replicas 2) while
the simulator streams through the producer and a consumer-group member into MarketStore.

After each fault MarketStore must equal the simulator's model row by row and Kafka must
hold every produced record, with no manual action; Kafka may hold a second copy of a record
only when librdkafka bumped the idempotent producer's epoch meanwhile (see
``tests.support.cluster.EpochWatch``), and the consumer drops such copies.
The time from a broker kill until the flow resumes is printed (``-s`` shows it) and
recorded in bench/brokerfault/README.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.native import NativeServices
from tests.support.cluster import ClusterRun, busiest_leader, wait_in_sync
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kafka_cluster: NativeServices) -> Iterator[NativeServices]:
    """The session's cluster with every node up, and up again after the test."""
    kafka_cluster.up(["kafka"])
    yield kafka_cluster
    kafka_cluster.up(["kafka"])


def test_kill_9_of_the_busiest_leader_and_its_restart(cluster: NativeServices,
                                                      tmp_path: Path) -> None:
    with ClusterRun(cluster, tmp_path, "ZBK", seed=31) as run:
        leader = busiest_leader(run.config)
        node = cluster.kafka_node(leader).name
        seconds = run.time_until_flow_resumes(lambda: cluster.kill(node))
        run.assert_alive()
        run.wait_events(200, "the stream while one broker is down")
        cluster.start(node)
        wait_in_sync(run.config)
        run.finish()
    print(f"\nbroker fault: kill -9 of {node} (leader of the busiest partitions): "
          f"flow resumed after {seconds:.1f} s")


def test_rolling_restart_of_all_three_brokers(cluster: NativeServices,
                                              tmp_path: Path) -> None:
    with ClusterRun(cluster, tmp_path, "ZRR", seed=32) as run:
        pauses = {}
        for node in cluster.kafka_nodes:
            # SIGTERM: a controlled shutdown hands its leaderships over first
            pauses[node.name] = run.time_until_flow_resumes(node.stop)
            run.assert_alive()
            run.wait_events(100, f"the stream while {node.name} is down")
            cluster.start(node.name)
            wait_in_sync(run.config)  # as a careful operator does before the next one
        run.finish()
    print("\nrolling restart: flow resumed after " + ", ".join(
        f"{name} {seconds:.1f} s" for name, seconds in pauses.items()))


def test_two_of_three_down_pauses_the_producer_and_everything_lands(
        cluster: NativeServices, tmp_path: Path) -> None:
    with ClusterRun(cluster, tmp_path, "ZTD", seed=33) as run:
        down = [n.name for n in cluster.kafka_nodes[1:]]
        for name in down:
            cluster.kill(name)
        # below min.insync.replicas nothing is acknowledged: records wait in the queue
        wait_for(lambda: run.publisher.queue_depth >= 400, timeout_s=120,
                 what="records piling up while two brokers are down")
        run.assert_alive()
        assert run.publisher.failed == 0
        waiting = run.publisher.queue_depth
        began = time.monotonic()
        cluster.up(down)  # both at once: neither can answer before a quorum of two is back
        answered = time.monotonic() - began
        produced = run.publisher.produced
        wait_for(lambda: run.publisher.delivered >= produced, timeout_s=180,
                 what="everything queued meanwhile to be acknowledged")
        seconds = time.monotonic() - began - answered
        wait_in_sync(run.config)
        run.finish()
    print(f"\ntwo of three brokers down: {waiting} records waited in the producer; the "
          f"nodes answered {answered:.1f} s after their start, and everything was "
          f"acknowledged {seconds:.1f} s later")
