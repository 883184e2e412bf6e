"""The group's offsets beyond committing: ``replay``'s start at a timestamp, its end offsets,
whether it caught up and how far it got, and the lag per partition."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from common.kafka import worth_asking_again
from consumer.batch import TP

log = logging.getLogger(__name__)


class GroupOffsets:
    """Offsets of ``topics`` as seen by ``consumer``'s group.

    ``starts``: where each partition began (the seeded offset, or its low watermark when
    the end offsets were taken); ``ends``: the high watermarks taken by
    :meth:`take_end_offsets`, None until then.
    """

    def __init__(self, consumer: Consumer, topics: list[str]) -> None:
        self._consumer = consumer
        self._topics = topics
        self.starts: dict[TP, int] = {}
        self.ends: dict[TP, int] | None = None

    def partitions(self) -> list[TopicPartition]:
        meta = self._consumer.list_topics(timeout=30)
        out: list[TopicPartition] = []
        for topic in self._topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                continue
            out.extend(TopicPartition(topic, p) for p in tmeta.partitions)
        return out

    def high_watermarks(self) -> dict[TP, int]:
        out = {}
        for tp in self.partitions():
            lo, hi = self._consumer.get_watermark_offsets(tp, timeout=30)
            out[(tp.topic, tp.partition)] = hi
            self.starts.setdefault((tp.topic, tp.partition), lo)
        return out

    def take_end_offsets(self) -> None:
        """The offsets a run ``until_caught_up`` ends at: the high watermarks now."""
        self.ends = self.high_watermarks()

    def seed_at(self, timestamp_ms: int) -> None:
        """A fresh group starting at a time: commit offsets_for_times before subscribing."""
        parts = self.partitions()
        committed = self._consumer.committed(parts, timeout=30)
        if any(tp.offset >= 0 for tp in committed):
            log.info("group has committed offsets; --from-timestamp ignored")
            return
        query = [TopicPartition(tp.topic, tp.partition, timestamp_ms) for tp in parts]
        found = self._consumer.offsets_for_times(query, timeout=30)
        seeds = []
        for tp in found:
            offset = tp.offset
            if offset < 0:  # nothing at or after the time: start at the end
                _lo, offset = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=30)
            seeds.append(TopicPartition(tp.topic, tp.partition, offset))
            self.starts[(tp.topic, tp.partition)] = offset
        if seeds:
            self._consumer.commit(offsets=seeds, asynchronous=False)
        log.info("group seeded at a timestamp", extra={"timestamp_ms": timestamp_ms,
                                                        "partitions": len(seeds)})

    def caught_up(self) -> bool:
        """The group's committed offsets reached the end offsets."""
        assert self.ends is not None
        todo = [TopicPartition(t, p) for (t, p), end in self.ends.items() if end > 0]
        if not todo:
            return True
        try:
            committed = self._consumer.committed(todo, timeout=30)
        except KafkaException as exc:
            # A broker that just (re)started answers NOT_COORDINATOR or
            # COORDINATOR_LOAD_IN_PROGRESS until the group's coordinator is up: ask again at
            # the next check instead of ending the replay with an error.
            if worth_asking_again(exc):
                log.info("committed offsets not readable yet: %s", exc)
                return False
            raise
        return all(tp.offset >= self.ends[(tp.topic, tp.partition)] for tp in committed)

    def lag(self, tps: Iterable[TP]) -> list[tuple[TP, int]]:
        """(partition, high watermark minus position) of those whose both are known;
        librdkafka's cached watermarks, no broker round trip for them."""
        try:
            positions = self._consumer.position([TopicPartition(t, p) for t, p in tps])
        except KafkaException:
            return []
        out = []
        for tp in positions:
            try:
                _lo, hi = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if hi >= 0 and tp.offset >= 0:
                out.append(((tp.topic, tp.partition), hi - tp.offset))
        return out


def replay_progress(starts: dict[TP, int], ends: dict[TP, int] | None,
                    committed: dict[TP, int]) -> tuple[int, int] | None:
    """(offsets committed, offsets to commit) from the start offsets up to the end offsets;
    None without end offsets. Copies the dicts first, so a display thread may call it while
    the loop updates them."""
    if ends is None:
        return None
    starts, committed = dict(starts), dict(committed)
    done = total = 0
    for tp, end in ends.items():
        start = min(starts.get(tp, 0), end)
        total += end - start
        done += max(0, min(committed.get(tp, start), end) - start)
    return done, total
