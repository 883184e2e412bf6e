"""Replication of the topics: how many copies, how many must acknowledge, and what a
partition's replica state (leader, replicas, in-sync replicas) says is wrong. Pure logic;
``schemas.topics`` reads the state from the broker and ``doctor`` prints these lines."""

from __future__ import annotations

from dataclasses import dataclass


def replication_for(brokers: int) -> int:
    """The replication factor topics get on a cluster of ``brokers`` brokers."""
    return max(1, min(3, brokers))


def min_insync_for(replication: int) -> int:
    """Two acknowledged copies where there are three: one broker may fail without stopping
    the ``acks=all`` producer, and an acknowledged record always survives one loss."""
    return 2 if replication >= 3 else 1


@dataclass(frozen=True)
class PartitionReplicas:
    partition: int
    leader: int  # -1: no leader (the partition is offline)
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def out_of_sync(self) -> tuple[int, ...]:
        return tuple(b for b in self.replicas if b not in self.isr)


def _brokers(partitions: list[PartitionReplicas]) -> str:
    """The brokers to bring back: those out of sync; every replica of an offline
    partition (its last leader may be any of them)."""
    ids = sorted({b for p in partitions
                  for b in (p.replicas if p.offline else p.out_of_sync)})
    return ", ".join(map(str, ids))


def _some(partitions: list[PartitionReplicas], shown: int = 4) -> str:
    text = ", ".join(f"p{p.partition} isr={list(p.isr)} of {list(p.replicas)}"
                     for p in partitions[:shown])
    return text + (f", +{len(partitions) - shown} more" if len(partitions) > shown else "")


def replication_problems(replicas: tuple[PartitionReplicas, ...] | list[PartitionReplicas],
                         min_insync: int) -> list[str]:
    """One sentence per kind of trouble, each with the fix; empty when every replica of
    every partition is in sync."""
    offline = [p for p in replicas if p.offline]
    under = [p for p in replicas if not p.offline and p.out_of_sync]
    blocked = [p for p in under if len(p.isr) < min_insync]
    problems = []
    if offline:
        problems.append(
            f"{len(offline)} partition(s) offline, no leader ({_some(offline)}): start "
            f"broker(s) {_brokers(offline)} (`massive-fetcher services up`); until then "
            "their records wait in the producer and their consumers stall; do not enable "
            "unclean.leader.election (it drops acknowledged records)")
    if blocked:
        problems.append(
            f"{len(blocked)} partition(s) have fewer in-sync replicas than "
            f"min.insync.replicas={min_insync} ({_some(blocked)}): the acks=all producer "
            f"pauses on them (nothing is dropped) until broker(s) {_brokers(blocked)} "
            "rejoin: start them (`massive-fetcher services up`)")
    if under:
        problems.append(
            f"{len(under)} partition(s) under-replicated ({_some(under)}): broker(s) "
            f"{_brokers(under)} are down or behind; start them (`massive-fetcher services "
            "up`) or check their logs and disks; they rejoin the ISR once caught up")
    return problems


def replication_summary(replicas: tuple[PartitionReplicas, ...] | list[PartitionReplicas],
                        min_insync: int) -> str:
    if not replicas:
        return "no partitions"
    copies = min(len(p.replicas) for p in replicas)
    in_sync = min(len(p.isr) for p in replicas)
    return (f"{len(replicas)} partitions, replicas={copies}, min ISR={in_sync}, "
            f"min.insync.replicas={min_insync}")
