"""Delayed, verified offset commits.

A written batch's offsets wait here until the write is ``consumer.commit_delay_ms`` old and
one written row reads back (durable in MarketStore, see ``consumer.writer``); only then are
they committed, at most once per ``COMMIT_INTERVAL_S`` in steady state. A failed read-back
raises to the caller, which aborts the checkpoint (nothing is committed, the pending offsets
are dropped and their events re-read).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Counter

from consumer.batch import TP
from consumer.sink import Probe

log = logging.getLogger(__name__)

# Offsets are committed at most this often in steady state (a synchronous commit is a broker
# round trip; doing it per 20 ms batch would add that to every event's latency). Rebalances
# and shutdown commit at once.
COMMIT_INTERVAL_S = 1.0


@dataclass
class PendingCommit:
    written_at: float  # monotonic
    offsets: dict[TP, int]
    probe: Probe | None


@dataclass
class ReadBack:
    """A probe being read back on the verify thread, and the pending commits it covers."""

    future: Future[bool]
    commits: list[PendingCommit]
    probe: Probe


class Checkpoint:
    """Pending commits of written batches; commits them once they are old enough and read
    back. ``verify(probe)`` reads a written row back (True once it is readable)."""

    def __init__(self, verify: Callable[[Probe], bool], delay_s: float, commits: Counter,
                 interval_s: float = COMMIT_INTERVAL_S) -> None:
        self._verify = verify
        self.delay_s = delay_s
        self.interval_s = interval_s
        self._commits = commits
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="marketstore-verify")
        self._pending: deque[PendingCommit] = deque()
        self._reading: ReadBack | None = None
        self._last_commit = 0.0
        # what this member committed (``replay --until-caught-up`` progress; plain dict reads)
        self.committed: dict[TP, int] = {}

    @property
    def pending(self) -> int:
        """Written batches whose offsets are not committed yet."""
        return len(self._pending)

    @property
    def reading(self) -> bool:
        """A read-back is in progress (or finished and not yet accounted for)."""
        return self._reading is not None

    def written(self, offsets: dict[TP, int], probe: Probe | None) -> None:
        """A batch covering ``offsets`` was written; ``probe`` is one of its rows."""
        self._pending.append(PendingCommit(time.monotonic(), offsets, probe))

    def commit(self, consumer: Consumer, owned: Collection[TP], wait: bool = False) -> None:
        """Commit the offsets of writes older than the delay once a probe reads back; only
        partitions in ``owned`` are committed. Raises ``MarketStoreError`` when reading back
        failed.

        In steady state the read-back runs on a thread of its own (it took 3-13 ms, once a
        second, on the loop's critical path) and the commit happens on a later call when it
        succeeded; ``wait`` (rebalance, shutdown) finishes one in progress and verifies and
        commits at once.
        """
        if self._reading is not None:
            reading = self._reading
            if not wait and not reading.future.done():
                return
            self._reading = None
            if reading.future.result():
                self._commit(consumer, reading.commits, owned, wait)
            else:
                log.warning("written row not yet readable; commit postponed",
                            extra={"bucket": reading.probe.tbk})
            if not wait:
                return
        if not self._pending:
            return
        if not wait and time.monotonic() - self._last_commit < self.interval_s:
            return
        if wait:
            remaining = self._pending[-1].written_at + self.delay_s - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        now = time.monotonic()
        ready = [p for p in self._pending if now - p.written_at >= self.delay_s]
        if not ready:
            return
        probe = next((p.probe for p in reversed(ready) if p.probe is not None), None)
        if probe is not None and not wait:
            self._last_commit = now
            self._reading = ReadBack(self._executor.submit(self._verify, probe), ready, probe)
            return
        if probe is not None and not self._verify(probe):
            log.warning("written row not yet readable; commit postponed",
                        extra={"bucket": probe.tbk})
            return
        self._commit(consumer, ready, owned, wait)

    def _commit(self, consumer: Consumer, ready: list[PendingCommit], owned: Collection[TP],
                wait: bool) -> None:
        """Commit verified pending writes (the oldest ones, unless they were dropped since)."""
        if len(self._pending) < len(ready) or any(
                self._pending[i] is not p for i, p in enumerate(ready)):
            return  # the pending commits were dropped (a failure or a lost assignment) meanwhile
        offsets: dict[TP, int] = {}
        for p in ready:
            offsets.update(p.offsets)
        for _ in ready:
            self._pending.popleft()
        self._last_commit = time.monotonic()
        mine = {tp: o for tp, o in offsets.items() if tp in owned}
        if not mine:
            return
        self.committed.update(mine)
        try:
            # steady state: asynchronous (a lost commit only means a deduplicated redelivery)
            commits = [TopicPartition(t, p, o) for (t, p), o in mine.items()]
            if wait:
                consumer.commit(offsets=commits, asynchronous=False)
            else:
                consumer.commit(offsets=commits, asynchronous=True)
            self._commits.inc()
        except KafkaException as exc:
            # Not fatal: the events are in MarketStore; a redelivery is deduplicated.
            log.warning("offset commit failed", extra={"error": str(exc)})

    def forget(self, tps: Iterable[TP]) -> None:
        """Never commit these partitions' pending offsets (they were given up)."""
        gone = set(tps)
        for p in self._pending:
            for tp in gone:
                p.offsets.pop(tp, None)

    def drop(self) -> None:
        """Forget every pending commit (their events are re-read)."""
        self._pending.clear()

    def abandon_read_back(self) -> None:
        """Wait for a read-back in progress and drop it (its writes are committed later or
        re-read); the verifying writer's HTTP session is free again afterwards."""
        if self._reading is not None:
            self._reading.future.exception()
            self._reading = None

    def close(self) -> None:
        self.abandon_read_back()
        self._executor.shutdown(wait=True)
