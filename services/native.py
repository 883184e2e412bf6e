"""Kafka, MarketStore and a registry as local processes: behind ``massive-fetcher services``.

    handle = NativeServices(config.services)
    handle.up()                       # returns once both answer real client requests
    handle.kafka_bootstrap, handle.marketstore_url
    handle.kill_marketstore(); handle.start_marketstore()   # crash + recovery in tests
    handle.down()                     # stops exactly the pids it started
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.config import ServicesConfig
from services.base import Service, ServiceError, ServiceStatus, missing_tool_error
from services.kafka import KafkaService
from services.marketstore import MarketStoreService
from services.paths import cache_root, state_root
from services.registry import RegistryService

SERVICE_NAMES: tuple[str, ...] = ("kafka", "marketstore", "registry")
# What `up` starts when no name is given; the registry is optional (schema_registry.url).
DEFAULT_SERVICES: tuple[str, ...] = ("kafka", "marketstore")


class ServicesHandle(Protocol):
    """What the test fixtures need from any way of running the servers (native, containers)."""

    @property
    def kafka_bootstrap(self) -> str: ...

    @property
    def marketstore_url(self) -> str: ...

    def kill_marketstore(self) -> None: ...

    def start_marketstore(self) -> None: ...

    def restart_marketstore(self) -> None: ...

    def down(self) -> object: ...


@dataclass(frozen=True)
class UpResult:
    name: str
    pid: int
    started: bool  # False: it was already running
    address: str
    seconds: float

    def line(self) -> str:
        if not self.started:
            return f"{self.name:<12} already running  pid {self.pid}  {self.address}"
        return (f"{self.name:<12} started  pid {self.pid}  {self.address}  "
                f"(ready in {self.seconds:.1f}s)")


@dataclass(frozen=True)
class DownResult:
    name: str
    pid: int | None  # None: nothing of ours was running

    def line(self) -> str:
        if self.pid is None:
            return f"{self.name:<12} not running"
        return f"{self.name:<12} stopped  pid {self.pid}"


class NativeServices:
    """Both servers under one state dir (data, logs, pid files) and one cache dir (builds)."""

    def __init__(self, settings: ServicesConfig, *, die_with_parent: bool = False,
                 startup_timeout_s: float = 180.0,
                 registry_users: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.cache_dir: Path = cache_root(settings)
        self.state_dir: Path = state_root(settings)
        self.startup_timeout_s = startup_timeout_s
        self.kafka = KafkaService(settings, self.state_dir, self.cache_dir, die_with_parent)
        self.marketstore = MarketStoreService(settings, self.state_dir, self.cache_dir,
                                              die_with_parent)
        self.registry = RegistryService(settings, self.state_dir, self.cache_dir,
                                        die_with_parent, users=registry_users)

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.address

    @property
    def marketstore_url(self) -> str:
        return self.marketstore.url

    @property
    def registry_url(self) -> str:
        return self.registry.url

    def service(self, name: str) -> Service:
        services: dict[str, Service] = {"kafka": self.kafka, "marketstore": self.marketstore,
                                        "registry": self.registry}
        try:
            return services[name]
        except KeyError:
            raise ValueError(f"unknown service {name!r} (known: {', '.join(services)})") \
                from None

    def _select(self, names: Iterable[str] | None, running_too: bool = False) -> list[Service]:
        """``names``, else the defaults (plus, with ``running_too``, any other that runs)."""
        if names:
            return [self.service(name) for name in names]
        return [self.service(name) for name in SERVICE_NAMES
                if name in DEFAULT_SERVICES or (running_too and self.service(name).pid())]

    def check_tools(self, names: Iterable[str] | None = None) -> None:
        """Raise one MissingToolError naming everything to install, before doing anything."""
        missing: list[str] = []
        for service in self._select(names):
            missing += [tool for tool in service.missing_tools() if tool not in missing]
        if missing:
            raise missing_tool_error(missing)

    def up(self, names: Iterable[str] | None = None,
           report: Callable[[str], None] | None = None) -> list[UpResult]:
        """Start what is not running and return once everything answers.

        Servers are launched first and awaited afterwards, so Kafka's JVM boots while
        MarketStore starts (or builds). If one fails, the ones this call started are stopped.
        """
        services = self._select(names)
        ports = [port for service in self._select(SERVICE_NAMES) for port in service.ports()]
        if len(set(ports)) != len(ports):
            raise ServiceError(f"services: every port must differ, got {ports} (kafka_port, "
                               "kafka_controller_port, marketstore_port, marketstore_grpc_port, "
                               "registry_port, registry_management_port)")
        self.check_tools(names)
        began = time.monotonic()
        launched: list[Service] = []
        results: list[UpResult] = []
        try:
            for service in services:
                if service.launch() is not None:
                    launched.append(service)
            for service in services:
                service.wait_ready(self.startup_timeout_s)
                pid = service.pid()
                assert pid is not None  # wait_ready raised otherwise
                result = UpResult(service.name, pid, service in launched, service.address,
                                  time.monotonic() - began)
                results.append(result)
                if report is not None:
                    report(result.line())
        except BaseException:
            for service in launched:
                service.stop()
            raise
        return results

    def down(self, names: Iterable[str] | None = None,
             report: Callable[[str], None] | None = None) -> list[DownResult]:
        results = []
        for service in self._select(names, running_too=True):
            result = DownResult(service.name, service.stop())
            results.append(result)
            if report is not None:
                report(result.line())
        return results

    def status(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        return [service.status() for service in self._select(names, running_too=True)]

    # --- crash and recovery (tests) ------------------------------------------------------
    def kill(self, name: str) -> int | None:
        """SIGKILL one server (no clean shutdown); returns its pid, None if it was not running."""
        return self.service(name).kill()

    def start(self, name: str) -> UpResult:
        return self.up([name])[0]

    def kill_marketstore(self) -> None:
        self.kill("marketstore")

    def start_marketstore(self) -> None:
        self.start("marketstore")

    def restart_marketstore(self) -> None:
        self.kill_marketstore()
        self.start_marketstore()
