"""``replay --until-caught-up`` on a terminal: a rich progress bar of the offsets committed
towards the end offsets taken at start (log lines print above it)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

REFRESH_S = 0.25


class ReplayProgress:
    """Polls ``progress() -> (done, total) | None`` on a thread of its own into a bar."""

    def __init__(self, progress: Callable[[], tuple[int, int] | None],
                 console: Any = None) -> None:
        self._progress = progress
        self._console = console
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._task: Any = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def start(self) -> ReplayProgress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("[bold]replay"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("offsets"), TimeRemainingColumn(), TimeElapsedColumn(),
                             console=self._console, refresh_per_second=4)
        self._bar.start()
        self._task = self._bar.add_task("replay", total=None)
        # rich now proxies sys.stderr: log lines print above the bar instead of through it
        self._handlers = [(h, h.setStream(sys.stderr)) for h in logging.getLogger().handlers
                          if isinstance(h, logging.StreamHandler)]

        def loop() -> None:
            while True:
                self._update()
                if self._stop.wait(REFRESH_S):
                    return

        self._thread = threading.Thread(target=loop, name="replay-progress", daemon=True)
        self._thread.start()
        return self

    def _update(self) -> None:
        state = self._progress()
        if state is not None:
            self._bar.update(self._task, completed=state[0], total=state[1])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._update()  # the last commits land after the last refresh
        for handler, stream in self._handlers:
            if stream is not None:
                handler.setStream(stream)
        if self._bar is not None:
            self._bar.stop()
