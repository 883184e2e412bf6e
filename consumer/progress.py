"""``replay --until-caught-up`` on a terminal: a rich progress bar of the offsets committed
towards the end offsets taken at start (log lines print above it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from common.progressbar import TerminalBar

REFRESH_S = 0.25


class ReplayProgress:
    """Polls ``progress() -> (done, total) | None`` on a thread of its own into a bar."""

    def __init__(self, progress: Callable[[], tuple[int, int] | None],
                 console: Any = None) -> None:
        self._progress = progress
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = TerminalBar("replay", "offsets", console=console)

    def start(self) -> ReplayProgress:
        self._bar.start()

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
            self._bar.update(state[0], state[1])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._update()  # the last commits land after the last refresh
        self._bar.stop()
