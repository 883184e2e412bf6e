"""How old a batch may get before the consumer writes it: ``consumer.batch_max_ms``, or
longer while MarketStore's writes are slow.

MarketStore rewrites a variable-length bucket's whole interval on every append, so its CPU
grows with the number of writes per second, not with the rows (``bench.consumer.shape``).
When the machine is busy a write takes longer; writing again as soon as the previous write
returns then keeps MarketStore busy all the time, competing for the cores with the broker and
the consumer it waits for. Here a batch waits at least ``batch_write_ratio`` times the recent
write time (bounded by ``batch_adaptive_max_ms``), so MarketStore works at most about
1/ratio of the time for this consumer: fewer, larger writes exactly when they are slow, and
the plain ``batch_max_ms`` when they are fast. Pure logic: the loop feeds it write times.
"""

from __future__ import annotations

# weight of the newest write time in the moving average: about the last 5 writes count
SMOOTHING = 0.2


class AdaptiveBatching:
    def __init__(self, batch_max_ms: float, write_ratio: float, adaptive_max_ms: float) -> None:
        self.floor_s = batch_max_ms / 1000
        self.ratio = write_ratio
        self.ceiling_s = max(adaptive_max_ms / 1000, self.floor_s)
        self.write_s = 0.0  # moving average of recent write times

    def observe(self, write_seconds: float) -> None:
        """A batch's write took this long."""
        if self.write_s == 0.0:
            self.write_s = write_seconds
        else:
            self.write_s += SMOOTHING * (write_seconds - self.write_s)

    def max_age_s(self) -> float:
        """How old the batch being built may get before it is written."""
        if self.ratio <= 0:
            return self.floor_s
        return min(self.ceiling_s, max(self.floor_s, self.ratio * self.write_s))
