"""compose.yaml cannot run here (no Docker engine), so check it against the code instead:
services, images, ports, environment, health checks, the config it mounts (loaded with the
real loader) and every command it runs (parsed with the real CLI parser)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import Config, load_config
from massive_fetcher import cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
CONFIG_PATH = "/etc/massive-fetcher/config.yaml"
# compose service -> (subcommand, module registering it, port serving /healthz)
PYTHON_PARTS: dict[str, tuple[str, str, int]] = {
    "simulator": ("simulator", "simulator.cli", Config().simulator.port),
    "producer": ("producer", "producer.cli", Config().metrics.producer_port),
    "consumer": ("consumer", "consumer.cli", Config().metrics.consumer_port),
    "backfill": ("backfill", "backfill.cli", Config().metrics.backfill_port),
}
CLUSTER = ("kafka-1", "kafka-2", "kafka-3")
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${NAME:-default}`` with an empty environment (what a fresh clone sees)."""
    env = env or {}
    return VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def config_content(compose: dict[str, Any], name: str) -> str:
    return interpolate(compose["configs"][name]["content"])


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "marketstore", "schema-registry", *CLUSTER,
                             *PYTHON_PARTS}
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert "container_name" not in service, f"{name}: a fixed name prevents scaling"


def test_kafka_is_a_single_kraft_node_with_a_volume(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{Config().services.kafka_version}"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in kafka["volumes"]
    # The host listener is published on the port it advertises.
    host_listener = next(x for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
                         if x.startswith("HOST://"))
    published = interpolate(kafka["ports"][0])
    assert published == f"127.0.0.1:{interpolate(host_listener).rsplit(':', 1)[1]}:9094"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_cluster_profile_has_three_voters_with_replication_3(
        services: dict[str, Any]) -> None:
    single = services["kafka"]
    voters = set()
    for index, name in enumerate(CLUSTER, start=1):
        node = services[name]
        assert node["profiles"] == ["cluster"], name
        assert node["image"] == single["image"], name
        env = {k: str(v) for k, v in node["environment"].items()}
        assert env["KAFKA_NODE_ID"] == str(index)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert f"PLAINTEXT://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert f"{name}-data:{env['KAFKA_LOG_DIRS']}" in node["volumes"]
        host = next(x for x in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
                    if x.startswith("HOST://"))
        assert node["ports"] == [f"127.0.0.1:{host.rsplit(':', 1)[1]}:9094"]
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({services[n]["environment"]["CLUSTER_ID"] for n in CLUSTER}) == 1
    # the cluster's bootstrap list replaces the single broker's through the environment
    env = services["producer"]["environment"]
    cluster = "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert interpolate(env["KAFKA_BOOTSTRAP_SERVERS"],
                       {"KAFKA_BOOTSTRAP_SERVERS": cluster}) == cluster


def test_marketstore_has_a_volume_and_its_mkts_yml(compose: dict[str, Any],
                                                   services: dict[str, Any]) -> None:
    mkts = services["marketstore"]
    assert "alpacamarkets/marketstore" in interpolate(mkts["image"])
    assert interpolate(mkts["image"]).endswith(Config().services.marketstore_version)
    mounted = {c["source"]: c["target"] for c in mkts["configs"]}
    assert mounted == {"mkts-config": "/etc/mkts.yml"}
    assert mkts["command"] == ["start", "--config", "/etc/mkts.yml"]
    settings = yaml.safe_load(config_content(compose, "mkts-config"))
    assert f"marketstore-data:{settings['root_directory']}" in mkts["volumes"]
    assert settings["listen_port"] == 5993
    assert interpolate(mkts["ports"][0]) == "127.0.0.1:5993:5993"
    assert ":5993/" in " ".join(mkts["healthcheck"]["test"])


def test_schema_registry_is_in_its_profile(services: dict[str, Any]) -> None:
    registry = services["schema-registry"]
    assert registry["image"].startswith("confluentinc/cp-schema-registry:")
    assert registry["profiles"] == ["registry"]
    assert registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == \
        "PLAINTEXT://kafka:9092"
    assert registry["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_python_parts_share_image_env_and_config(compose: dict[str, Any],
                                                 services: dict[str, Any]) -> None:
    simulator_port = PYTHON_PARTS["simulator"][2]
    for name in PYTHON_PARTS:
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert env["MARKETSTORE_URL"] == "http://marketstore:5993/rpc", name
        assert env["MASSIVE_WS_SERVER"] == f"ws://simulator:{simulator_port}", name
        assert env["MASSIVE_BASE_URL"] == f"http://simulator:{simulator_port}", name
        assert service["environment"]["MASSIVE_API_KEY"] == "${MASSIVE_API_KEY:-demo}", name
        assert {c["target"] for c in service["configs"]} == {CONFIG_PATH}, name
    # The mounted config is valid for the real loader, with the compose environment on top.
    path = Path(compose["name"] + "-config.yaml")
    env = {k: interpolate(str(v)) for k, v in services["producer"]["environment"].items()}
    config = _load_content(config_content(compose, "massive-fetcher-config"), path, env)
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.massive.ws_server == f"ws://simulator:{simulator_port}"
    assert config.massive.api_key == "demo"
    assert config.metrics.host == "0.0.0.0"  # scrapeable from other containers
    assert config.simulator.host == "0.0.0.0"


def _load_content(content: str, name: Path, env: dict[str, str]) -> Config:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(content)
        return load_config(path, env=env)


@pytest.mark.parametrize("name", sorted(PYTHON_PARTS))
def test_health_checks_use_the_parts_ports(services: dict[str, Any], name: str) -> None:
    port = PYTHON_PARTS[name][2]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(services[name]["healthcheck"]["test"])


def test_consumer_scales_and_backfill_is_one_shot(services: dict[str, Any]) -> None:
    consumer = services["consumer"]
    assert "ports" not in consumer and "container_name" not in consumer
    assert {d: c["condition"] for d, c in consumer["depends_on"].items()} == {
        "kafka": "service_healthy", "marketstore": "service_healthy"}
    backfill = services["backfill"]
    assert backfill["profiles"] == ["backfill"]
    assert backfill["restart"] == "no"
    for name in ("producer", "simulator"):
        assert "profiles" not in services[name]


def test_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert used == set(compose["volumes"])


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("name", sorted(PYTHON_PARTS))
def test_commands_parse_with_the_real_cli(services: dict[str, Any], name: str) -> None:
    subcommand, module, port = PYTHON_PARTS[name]
    if not _module_exists(module):
        pytest.skip(f"{module} does not exist yet, so `massive-fetcher {subcommand}` "
                    "cannot be checked")
    argv = [interpolate(str(arg)) for arg in services[name]["command"]]
    assert argv[0] == "massive-fetcher"
    assert argv[1] == subcommand
    parser = cli.build_parser()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"compose service {name}: `{' '.join(argv)}` does not parse "
                    f"(exit {exc.code})")
    assert isinstance(args, argparse.Namespace)
    assert args.command == subcommand
    assert callable(args.func)
    assert args.config == CONFIG_PATH
    if name == "simulator":
        assert (args.host, args.port) == ("0.0.0.0", port)


def test_backfill_command_with_overrides_still_parses(services: dict[str, Any]) -> None:
    if not _module_exists("backfill.cli"):
        pytest.skip("backfill.cli does not exist yet")
    env = {"BACKFILL_TRADES": "true", "BACKFILL_FROM": "2026-01-05",
           "BACKFILL_SYMBOLS": "SPY"}
    argv = [interpolate(str(arg), env) for arg in services["backfill"]["command"]]
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "backfill"
    assert "1Min=2026-01-05" in args.starts
    assert args.symbols == "SPY"


def test_dockerfile_installs_the_project_on_python_311() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "pip install" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
