"""common.progressbar.TerminalBar, the bar of ``backfill`` and ``replay`` on a terminal:
its layout, and the log handlers it borrows while shown and gives back."""

from __future__ import annotations

import io
import logging
import re

from rich.console import Console

from common.progressbar import TerminalBar

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _console(out: io.StringIO) -> Console:
    return Console(file=out, force_terminal=True, width=120)


def test_the_bar_shows_label_count_unit_and_detail() -> None:
    out = io.StringIO()
    bar = TerminalBar("backfill", "windows", detail=True, console=_console(out)).start()
    bar.update(3, 8, detail="symbols 1/2  pages 4")
    bar.stop()
    text = ANSI.sub("", out.getvalue())
    assert "backfill" in text and "3/8" in text and "windows" in text
    assert "symbols 1/2  pages 4" in text


def test_an_unknown_total_and_no_detail_column() -> None:
    out = io.StringIO()
    bar = TerminalBar("replay", "offsets", console=_console(out)).start()
    bar.update(5, None)
    bar.update(7, 10)
    bar.stop()
    assert "7/10" in ANSI.sub("", out.getvalue())


def test_log_handlers_get_their_stream_back() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        bar = TerminalBar("replay", "offsets", console=_console(io.StringIO())).start()
        assert handler.stream is not stream  # printed above the bar while it is shown
        bar.stop()
        bar.stop()  # a second stop is harmless (close after an error)
        assert handler.stream is stream
    finally:
        root.removeHandler(handler)


def test_stopping_a_bar_never_started_is_harmless() -> None:
    TerminalBar("backfill", "windows", detail=True).stop()
