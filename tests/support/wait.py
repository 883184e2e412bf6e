"""Waiting in tests for a condition, never for a fixed time: a loaded machine makes any
fixed sleep too short some day."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, *,
             retry_on: tuple[type[BaseException], ...] = (),
             interval_s: float | None = None) -> None:
    """Return once ``condition()`` is true; fail with ``what`` after ``timeout_s``.

    An exception of a type in ``retry_on`` counts as "not yet" (a server still starting);
    the last one is chained to the failure. The poll interval grows from 20 ms to 200 ms,
    so a quick condition is seen at once and a slow one (a MarketStore query) is not
    hammered; ``interval_s`` fixes it, for a test that must act within a short window
    or whose condition is costly."""
    for pause in _pauses(condition, timeout_s, what, retry_on, interval_s):
        time.sleep(pause)


async def wait_for_async(condition: Callable[[], object], timeout_s: float, what: str, *,
                         retry_on: tuple[type[BaseException], ...] = (),
                         interval_s: float | None = None) -> None:
    """:func:`wait_for` on an event loop: the loop runs on while the condition is not met
    (the code under test is often a task on the same loop)."""
    for pause in _pauses(condition, timeout_s, what, retry_on, interval_s):
        await asyncio.sleep(pause)


def _pauses(condition: Callable[[], object], timeout_s: float, what: str,
            retry_on: tuple[type[BaseException], ...],
            interval_s: float | None) -> Iterator[float]:
    """The pauses between tries of ``condition``, ending when it holds; the failure once
    ``timeout_s`` passed. Sleeping is the caller's, so both waits share the rules."""
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
        yield interval
        if interval_s is None:
            interval = min(interval * 2, 0.2)
