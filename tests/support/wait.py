"""Waiting in tests for a condition, never for a fixed time: a loaded machine makes any
fixed sleep too short some day."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, *,
             retry_on: tuple[type[BaseException], ...] = (),
             interval_s: float | None = None) -> None:
    """Return once ``condition()`` is true; fail with ``what`` after ``timeout_s``.

    An exception of a type in ``retry_on`` counts as "not yet" (a server still starting);
    the last one is chained to the failure. The poll interval grows from 20 ms to 200 ms,
    so a quick condition is seen at once and a slow one (a MarketStore query) is not
    hammered; ``interval_s`` fixes it, for a test that must act within a short window
    or whose condition is costly."""
    deadline = time.monotonic() + timeout_s
    interval = interval_s or 0.02
    last: BaseException | None = None
    while True:
        try:
            if condition():
                return
        except retry_on as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from last
        time.sleep(interval)
        if interval_s is None:
            interval = min(interval * 2, 0.2)
