"""Session fixtures: one real Kafka broker and one real MarketStore server per test session.

Where they come from, in order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``MARKETSTORE_URL`` when set (shared servers; a missing one
   of the two is started natively);
2. testcontainers (``apache/kafka``, ``alpacamarkets/marketstore``) when a Docker engine answers;
3. ``services.native.NativeServices`` on free loopback ports with a per-session state dir
   (the build cache is the user's, so the MarketStore build and Kafka jars are reused),
   stopped by pid at the end of the session.
``MASSIVE_FETCHER_TEST_SERVICES=env|docker|native`` forces one way.

Fixtures:
    kafka_bootstrap: str        e.g. "127.0.0.1:19092"
    marketstore_url: str        e.g. "http://127.0.0.1:15993/rpc"
    live_services: LiveServices  (both addresses, how they were obtained, the handle)
    marketstore_control          a MarketStore the test may kill -9 and start again:
        .marketstore_url, .kill_marketstore(), .start_marketstore(), .restart_marketstore()
        With shared servers from the environment this is a private native MarketStore
        (never the shared one), so use ``marketstore_control.marketstore_url`` in such tests.
    schema_registry_url: str     a real Confluent-compatible registry, e.g.
        "http://127.0.0.1:18081/apis/ccompat/v7": ``SCHEMA_REGISTRY_URL`` when set, Confluent's
        image when the session runs on containers, else a native Apicurio Registry.
    kafka_cluster: NativeServices   a native three-node KRaft cluster of the session's own
        (replication 3, min.insync.replicas 2) and a MarketStore beside it, started only by
        the tests that ask for it; they may kill and start its nodes (``kill("kafka-2")``,
        ``start("kafka-2")``). ``.kafka_bootstrap`` lists all three nodes.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.config import ServicesConfig
from services.base import ServiceError
from services.containers import ContainerServices, docker_available
from services.native import NativeServices, ServicesHandle
from services.process import free_port
from tests.support.registry import private_registry

MODE_ENV = "MASSIVE_FETCHER_TEST_SERVICES"
MODES = ("auto", "env", "docker", "native")

# The fixtures that start or reach a real server. A test whose fixture closure holds one of
# them is an integration test, so `make test-fast` (-m "not integration") can never start a
# server by accident, and a new fixture on top of these is covered without a marker.
SERVER_FIXTURES = frozenset({"live_services", "_session_marketstore_control", "kafka_cluster",
                             "schema_registry_url"})


def pytest_configure(config: pytest.Config) -> None:
    try:  # with MASSIVE_FETCHER_REQUIRE_NATIVE set, a missing build ends the run here
        import schemas.native  # noqa: F401
    except ImportError as exc:
        pytest.exit(str(exc), returncode=3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@dataclass
class LiveServices:
    kafka_bootstrap: str
    marketstore_url: str
    mode: str  # "env", "docker", "native" or "env+native"
    handle: ServicesHandle | None  # None: nothing started by this session
    controls_marketstore: bool  # the handle started marketstore_url's server


def native_settings(state_dir: Path) -> ServicesConfig:
    """Free loopback ports and a private state dir; the cache stays the user's (shared)."""
    return ServicesConfig(kafka_port=free_port(), kafka_controller_port=free_port(),
                          marketstore_port=free_port(), marketstore_grpc_port=free_port(),
                          state_dir=str(state_dir))


def _state_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    # Short paths: a long basetemp would only make log lines and /proc scans harder to read.
    return Path(tempfile.mkdtemp(prefix=f"mf-{name}-", dir=factory.getbasetemp()))


def _start_native(factory: pytest.TempPathFactory, names: list[str]) -> NativeServices:
    handle = NativeServices(native_settings(_state_dir(factory, "services")),
                            die_with_parent=True)
    try:
        handle.up(names)
    except ServiceError as exc:
        pytest.fail(f"could not start native {', '.join(names)}: {exc}", pytrace=False)
    return handle


@pytest.fixture(scope="session")
def live_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServices]:
    mode = os.environ.get(MODE_ENV, "auto").strip() or "auto"
    if mode not in MODES:
        pytest.fail(f"{MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}", pytrace=False)
    kafka_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    mkts_env = os.environ.get("MARKETSTORE_URL", "").strip()

    if mode == "env" or (mode == "auto" and kafka_env and mkts_env):
        if not (kafka_env and mkts_env):
            pytest.fail(f"{MODE_ENV}=env needs KAFKA_BOOTSTRAP_SERVERS and MARKETSTORE_URL",
                        pytrace=False)
        yield LiveServices(kafka_env, mkts_env, "env", None, False)
        return

    if mode == "auto" and (kafka_env or mkts_env):
        native = _start_native(tmp_path_factory, ["marketstore" if kafka_env else "kafka"])
        try:
            yield LiveServices(kafka_env or native.kafka_bootstrap,
                               mkts_env or native.marketstore_url, "env+native", native,
                               controls_marketstore=not mkts_env)
        finally:
            native.down()
        return

    if mode == "docker" and not docker_available():
        pytest.fail(f"{MODE_ENV}=docker, but no Docker engine answers", pytrace=False)
    if mode == "docker" or (mode == "auto" and docker_available()):
        containers = ContainerServices(ServicesConfig())
        try:
            containers.up()
        except Exception as exc:  # ServiceError, or the Docker API's own (pull, create...)
            if mode == "docker":
                pytest.fail(f"could not start the Kafka and MarketStore containers: {exc}",
                            pytrace=False)
            # e.g. images that cannot be pulled: the native services still work.
            warnings.warn(f"containers failed ({exc}); starting native services instead",
                          stacklevel=1)
        else:
            try:
                yield LiveServices(containers.kafka_bootstrap, containers.marketstore_url,
                                   "docker", containers, True)
            finally:
                containers.down()
            return

    native = _start_native(tmp_path_factory, ["kafka", "marketstore"])
    try:
        yield LiveServices(native.kafka_bootstrap, native.marketstore_url, "native", native,
                           True)
    finally:
        native.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(live_services: LiveServices) -> str:
    return live_services.kafka_bootstrap


@pytest.fixture(scope="session")
def marketstore_url(live_services: LiveServices) -> str:
    return live_services.marketstore_url


@pytest.fixture(scope="session")
def _session_marketstore_control(live_services: LiveServices,
                                 tmp_path_factory: pytest.TempPathFactory,
                                 ) -> Iterator[ServicesHandle]:
    if live_services.controls_marketstore and live_services.handle is not None:
        yield live_services.handle
        return
    # The session's MarketStore is shared with other people: never kill it. A private one
    # serves the tests that crash MarketStore on purpose.
    private = NativeServices(native_settings(_state_dir(tmp_path_factory, "mkts-control")),
                             die_with_parent=True)
    try:
        private.check_tools(["marketstore"])
        private.up(["marketstore"])
    except ServiceError as exc:
        pytest.skip(f"needs a MarketStore it may kill: MARKETSTORE_URL is shared and a "
                    f"private native one cannot start ({exc})")
    try:
        yield private
    finally:
        private.down()


@pytest.fixture
def marketstore_control(_session_marketstore_control: ServicesHandle,
                        ) -> Iterator[ServicesHandle]:
    """A MarketStore this test may kill -9 and start again; running again after the test."""
    yield _session_marketstore_control
    _session_marketstore_control.start_marketstore()


@pytest.fixture(scope="session")
def schema_registry_url(live_services: LiveServices,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    shared = os.environ.get("SCHEMA_REGISTRY_URL", "").strip()
    if shared:
        yield shared
        return
    if isinstance(live_services.handle, ContainerServices):
        try:
            yield live_services.handle.start_registry()
        finally:
            live_services.handle.stop_registry()
        return
    with private_registry(_state_dir(tmp_path_factory, "registry")) as native:
        yield native.registry_url


CLUSTER_BROKERS = 3


def free_run(length: int) -> list[int]:
    """``length`` consecutive free loopback ports below the kernel's ephemeral range: a port
    in that range can become the local port of any outgoing connection between this choice
    and the servers' bind (a cluster node's controller once failed to bind so)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        first = secrets.randbelow(low - length - 10_000) + 10_000
        run = list(range(first, first + length))
        if all(_bindable(p) for p in run):
            return run
    raise RuntimeError(f"no {length} consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServices]:
    # Node ports as `services up --brokers 3` derives them, so the CLI finds the nodes too.
    settings = dataclasses.replace(native_settings(_state_dir(tmp_path_factory, "cluster")),
                                   **dict(zip(("kafka_port", "kafka_controller_port"),
                                              free_run(2 * CLUSTER_BROKERS), strict=False)))
    handle = NativeServices(settings, die_with_parent=True, brokers=CLUSTER_BROKERS)
    try:
        handle.up()
    except ServiceError as exc:
        pytest.fail(f"could not start a {CLUSTER_BROKERS}-node Kafka cluster: {exc}",
                    pytrace=False)
    try:
        yield handle
    finally:
        handle.down()
