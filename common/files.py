"""Files only their owner may read, for anything that can hold the API key.

A file is created with mode 0600 by ``os.open`` itself, so it is never readable by others,
not even for the moment between a create and a chmod, and whatever the umask (a umask only
removes permission bits). It is written beside its final name and renamed over it: a file
that already existed with a wider mode is replaced, not rewritten in place, and a reader
never sees it half written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` with mode 0600; returns the path."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    with contextlib.suppress(FileNotFoundError):  # left by a process killed mid-write
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return target
