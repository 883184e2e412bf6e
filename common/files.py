"""Files replaced whole and atomically: a reader sees the old content or the new, never
half of it; and files only their owner may read, for anything that can hold the API key.

A file is written beside its final name and renamed over it, so a file that already
existed (even with a wider mode) is replaced, not rewritten in place. Its mode is set by
``os.open`` itself: a private file is never readable by others, not even for the moment
between a create and a chmod, and whatever the umask (a umask only removes permission
bits). A durable replacement is fsynced, and so is its directory, so it survives a crash
of the machine once written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_MODE = 0o600
# What open() creates: everything the umask leaves.
DEFAULT_MODE = 0o666


def replace_file(path: str | os.PathLike[str], data: str | bytes, *,
                 mode: int = DEFAULT_MODE, durable: bool = False) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically; returns the path. Raises
    ``OSError`` when it cannot (no partial file is left)."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with contextlib.suppress(FileNotFoundError):  # left by a process killed mid-write
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    if durable:
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def write_private(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` with mode 0600; returns the path."""
    return replace_file(path, data, mode=PRIVATE_MODE)
