"""The loop's in-flight state: the batch being filled and the write on the writer thread."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from consumer.sink import FlushResult

TP = tuple[str, int]  # (topic, partition)


@dataclass
class Batch:
    """What was added to the sink since its last flush.

    ``offsets``: per partition, the next offset to commit once the batch is written;
    ``received``: the rows' ``received_ns`` (latency samples); ``started``: when the poll
    that brought its first message began (a batch's age counts from it).
    """

    offsets: dict[TP, int] = field(default_factory=dict)
    received: list[np.ndarray] = field(default_factory=list)
    started: float | None = None

    def due(self, pending: int, max_events: int, max_s: float, now: float) -> bool:
        """The batch holds something and is full or ``max_s`` old."""
        return bool(self.offsets) and (
            pending >= max_events or now - (self.started or 0) >= max_s)

    def clear(self) -> None:
        """Forget everything, ``started`` too: left set, it would make every later poll
        wait 0 s (a busy loop) until the next message arrives."""
        self.offsets.clear()
        self.received.clear()
        self.started = None


@dataclass
class InflightWrite:
    """A batch handed to the writer thread, until its outcome is accounted for."""

    future: Future[FlushResult]
    offsets: dict[TP, int]
    received: list[np.ndarray]
    started: float  # wall clock when handed over (log lines)
