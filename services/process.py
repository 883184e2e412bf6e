"""Processes we start and must later find again: pid files, ownership checks, signals.

A pid alone is not proof: after a reboot or a crash the number may belong to anything.
Before any signal we check ``/proc/<pid>/cmdline`` still names the config file we generated
for that service (a path inside our own state dir), so ``down`` never hits a stranger.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None when it is gone (or a zombie: empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]


def is_ours(pid: int, marker: str) -> bool:
    args = cmdline(pid)
    return args is not None and any(marker in arg for arg in args)


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(pid_file: Path, pid: int) -> None:
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def find_processes(marker: str) -> list[int]:
    """Every live process whose argv mentions ``marker`` (tests use it to prove none is left)."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and is_ours(pid, marker)]


def _die_with_parent() -> None:
    # Test sessions ask for this so a killed pytest cannot leave servers behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(argv: Sequence[str], log_path: Path, cwd: Path,
          env: Mapping[str, str] | None = None,
          die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached from our terminal (own session), output appended to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def wait_gone(pid: int, marker: str, timeout_s: float,
              child: subprocess.Popen[bytes] | None = None) -> bool:
    """True once the process has exited (reaping it when it is our child)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if child is not None and child.poll() is not None:
            return True
        if not is_ours(pid, marker):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(pid: int, marker: str, grace_s: float,
              child: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL. False if the pid was not ours."""
    if not is_ours(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_gone(pid, marker, grace_s, child):
        kill(pid, marker, child)
    return True


def kill(pid: int, marker: str, child: subprocess.Popen[bytes] | None = None,
         timeout_s: float = 10.0) -> bool:
    """SIGKILL (no clean shutdown at all) and wait until the process is gone."""
    if not is_ours(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, marker, timeout_s, child):
        raise RuntimeError(f"process {pid} survived SIGKILL for {timeout_s:.0f}s")
    return True


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# Ports free_port has handed out in this process. The socket that found a port is closed
# before the caller binds it, so the kernel may offer the same port to the next call: two
# ports of one configuration came out equal in a CI run. A port is handed out once.
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and that no earlier call in this process returned."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two concurrent ``up`` or builds never race each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def poll_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.2,
               abort: Callable[[], str | None] | None = None) -> bool:
    """Call ``check`` until true or out of time; ``abort`` returning a reason stops early."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if abort is not None and abort() is not None:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
