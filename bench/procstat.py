"""CPU seconds from Linux's /proc stat files: the benchmarks' per-process and per-thread
figures (rusage has neither a process's children apart nor its threads apart)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path: str | Path) -> float | None:
    """utime + stime of a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat``; None
    once the process or thread is gone."""
    try:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
