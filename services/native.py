"""Kafka, MarketStore and a registry as local processes: behind ``massive-fetcher services``.

    handle = NativeServices(config.services)
    handle.up()                       # returns once both answer real client requests
    handle.kafka_bootstrap, handle.marketstore_url
    handle.kill_marketstore(); handle.start_marketstore()   # crash + recovery in tests
    handle.down()                     # stops exactly the pids it started

``NativeServices(settings, brokers=3)`` runs Kafka as a three-node cluster (services/cluster.py):
"kafka" then names every node, "kafka-2" one of them (``kill("kafka-2")``, ``start(...)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.config import ServicesConfig
from services.base import Service, ServiceError, ServiceStatus, missing_tool_error
from services.cluster import MAX_BROKERS, PORT_STEP, cluster_nodes, cluster_size
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
                 startup_timeout_s: float = 180.0, brokers: int | None = None,
                 kafka_ports: list[tuple[int, int]] | None = None,
                 registry_users: dict[str, str] | None = None) -> None:
        """``brokers``: Kafka nodes (default: as many as the state dir holds, else one);
        ``kafka_ports``: each node's (client, controller) port instead of the derived ones."""
        self.settings = settings
        self.cache_dir: Path = cache_root(settings)
        self.state_dir: Path = state_root(settings)
        self.startup_timeout_s = startup_timeout_s
        self.brokers = cluster_size(self.state_dir) if brokers is None else brokers
        if not 1 <= self.brokers <= MAX_BROKERS:
            raise ServiceError(f"services: --brokers {self.brokers} is out of range "
                               f"(allowed: 1..{MAX_BROKERS})")
        self.kafka_nodes = cluster_nodes(settings, self.state_dir, self.cache_dir,
                                         self.brokers, kafka_ports, die_with_parent)
        self.kafka = self.kafka_nodes[0]
        self.marketstore = MarketStoreService(settings, self.state_dir, self.cache_dir,
                                              die_with_parent)
        self.registry = RegistryService(settings, self.state_dir, self.cache_dir,
                                        die_with_parent, users=registry_users)

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(node.address for node in self.kafka_nodes)

    def kafka_node(self, node_id: int) -> Service:
        """The node whose ``node.id`` (the broker id in metadata) is ``node_id``."""
        return self.service(f"kafka-{node_id}" if len(self.kafka_nodes) > 1 else "kafka")

    @property
    def marketstore_url(self) -> str:
        return self.marketstore.url

    @property
    def registry_url(self) -> str:
        return self.registry.url

    def names(self) -> list[str]:
        """Every name ``service`` knows: "kafka" is one node or the whole cluster."""
        return ["kafka", *(n.name for n in self.kafka_nodes if n.name != "kafka"),
                "marketstore", "registry"]

    def _named(self, name: str) -> list[Service]:
        if name == "kafka":
            return list(self.kafka_nodes)
        services: dict[str, Service] = {s.name: s for s in (*self.kafka_nodes,
                                                            self.marketstore, self.registry)}
        if name not in services:
            raise ValueError(f"unknown service {name!r} (known: {', '.join(self.names())})")
        return [services[name]]

    def service(self, name: str) -> Service:
        """One server by name; "kafka" only while Kafka is a single node."""
        named = self._named(name)
        if len(named) > 1:
            raise ValueError(f"{name!r} is a cluster of {len(named)} nodes: name one "
                             f"({', '.join(s.name for s in named)})")
        return named[0]

    def _select(self, names: Iterable[str] | None, running_too: bool = False) -> list[Service]:
        """``names``, else the defaults (plus, with ``running_too``, any other that runs)."""
        if not names:
            names = [name for name in SERVICE_NAMES if name in DEFAULT_SERVICES
                     or (running_too and any(s.pid() for s in self._named(name)))]
        return list(dict.fromkeys(s for name in names for s in self._named(name)))

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
                               "registry_port, registry_management_port; a cluster's node i "
                               f"adds {PORT_STEP}*(i-1) to the first two)")
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
        # All at once: the last node of a cluster stopped alone would wait out its grace
        # period for a controlled shutdown that a quorum of one cannot grant.
        services = self._select(names, running_too=True)
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            pids = list(pool.map(lambda service: service.stop(), services))
        results = [DownResult(s.name, pid) for s, pid in zip(services, pids, strict=True)]
        if report is not None:
            for result in results:
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
