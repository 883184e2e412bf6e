"""This process's TCP connections, read from /proc (Linux): what a client left open."""

from __future__ import annotations

import os
from pathlib import Path

ESTABLISHED = "01"


def _socket_inodes() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since listed
            continue
        if link.startswith("socket:["):
            out.add(link[len("socket:["):-1])
    return out


def established_to(port: int) -> set[int]:
    """Local ports of this process's established TCP connections to ``port``."""
    inodes = _socket_inodes()
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == ESTABLISHED and inode in inodes and \
                    int(remote.rsplit(":", 1)[1], 16) == port:
                out.add(int(local.rsplit(":", 1)[1], 16))
    return out
