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


def pid_listening_on(port: int) -> int | None:
    """The pid of the process listening on a local TCP port (Linux; None when not found or
    not ours to see): how a benchmark charges MarketStore's CPU without being told its pid."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f[9])
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return int(proc.name)
    return None
