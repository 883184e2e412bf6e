"""The rich progress bar of the long CLI runs (``backfill``, ``replay --until-caught-up``)
on a terminal: one layout, and log lines printed above it instead of through it."""

from __future__ import annotations

import logging
import sys
from typing import Any


class TerminalBar:
    """``label`` [bar] done/total ``unit``, time left and elapsed, then a free-text detail
    column when ``detail`` is set. ``start`` shows it, ``stop`` removes it."""

    def __init__(self, label: str, unit: str, *, detail: bool = False,
                 console: Any = None) -> None:
        self._label, self._unit, self._detail, self._console = label, unit, detail, console
        self._bar: Any = None
        self._task: Any = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def start(self) -> TerminalBar:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[Any] = [TextColumn(f"[bold]{self._label}"), BarColumn(),
                              MofNCompleteColumn(), TextColumn(self._unit),
                              TimeRemainingColumn(), TimeElapsedColumn()]
        fields: dict[str, Any] = {}
        if self._detail:
            columns.append(TextColumn("{task.fields[detail]}"))
            fields["detail"] = ""
        self._bar = Progress(*columns, console=self._console, refresh_per_second=4)
        self._bar.start()
        self._task = self._bar.add_task(self._label, total=None, **fields)
        # rich now proxies sys.stderr: log lines print above the bar instead of through it
        self._handlers = [(h, h.setStream(sys.stderr)) for h in logging.getLogger().handlers
                          if isinstance(h, logging.StreamHandler)]
        return self

    def update(self, completed: int, total: int | None, detail: str | None = None) -> None:
        fields = {} if detail is None else {"detail": detail}
        self._bar.update(self._task, completed=completed, total=total, **fields)

    def stop(self) -> None:
        for handler, stream in self._handlers:
            if stream is not None:
                handler.setStream(stream)
        self._handlers = []
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
