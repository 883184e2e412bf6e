"""compose.yaml cannot run here (no Docker engine), so check it against the code instead:
services, profiles, images, ports, environment, health checks, the config each container
ends up with (chosen by the real docker/entrypoint.sh, loaded with the real loader under the
compose environment) and every command it runs (parsed with the real CLI parser)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import Config, load_config
from massive_fetcher import cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
SIMULATOR_ENV = ROOT / "compose.simulator.env"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
CONFIG_PATH = "/etc/massive-fetcher/config.yaml"  # the bundled config
LOCAL_DIR = "/etc/massive-fetcher/local"  # where the user's directory is mounted
# compose service -> (subcommand, module registering it, port serving /healthz)
PYTHON_PARTS: dict[str, tuple[str, str, int]] = {
    "simulator": ("simulator", "simulator.cli", Config().simulator.port),
    "producer": ("producer", "producer.cli", Config().metrics.producer_port),
    "consumer": ("consumer", "consumer.cli", Config().metrics.consumer_port),
    "backfill": ("backfill", "backfill.cli", Config().metrics.backfill_port),
}
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


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert set(services) == {"kafka", "marketstore", "schema-registry", "prometheus",
                             "grafana", *PYTHON_PARTS}
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
    assert "stale_threshold" not in settings  # v4.1.23 has no such setting
    assert interpolate(mkts["ports"][0]) == "127.0.0.1:5993:5993"
    assert ":5993/" in " ".join(mkts["healthcheck"]["test"])


def test_schema_registry_is_in_its_profile(services: dict[str, Any]) -> None:
    registry = services["schema-registry"]
    assert registry["image"].startswith("confluentinc/cp-schema-registry:")
    assert registry["profiles"] == ["registry"]
    assert registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == \
        "PLAINTEXT://kafka:9092"
    assert registry["depends_on"]["kafka"]["condition"] == "service_healthy"


def _container_env(services: dict[str, Any], name: str,
                   env: dict[str, str] | None = None) -> dict[str, str]:
    return {k: interpolate(str(v), env) for k, v in services[name]["environment"].items()}


def test_python_parts_share_image_env_and_config(compose: dict[str, Any],
                                                 services: dict[str, Any]) -> None:
    for name in PYTHON_PARTS:
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        env = _container_env(services, name)
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert env["MARKETSTORE_URL"] == "http://marketstore:5993/rpc", name
        assert env["METRICS_HOST"] == "0.0.0.0", name  # scrapeable from other containers
        for var in ("MASSIVE_API_KEY", "MASSIVE_WS_SERVER", "MASSIVE_BASE_URL",
                    "MASSIVE_SYMBOLS", "MASSIVE_DATA_TYPES"):
            assert service["environment"][var] == f"${{{var}:-}}", (name, var)
        assert {c["target"] for c in service["configs"]} == {CONFIG_PATH}, name
        assert f"${{MASSIVE_FETCHER_CONFIG_DIR:-.}}:{LOCAL_DIR}:ro" in service["volumes"], name
        assert service["working_dir"] == "/var/lib/massive-fetcher", name


def test_a_real_feed_needs_no_edit_of_compose_yaml(compose: dict[str, Any],
                                                   services: dict[str, Any]) -> None:
    """Nothing set: Massive's real hosts; symbols, data types and the key from the shell."""
    bundled = config_content(compose, "massive-fetcher-config")
    config = _load_content(bundled, Path("config.yaml"), _container_env(services, "producer"))
    assert config.massive.ws_server == "wss://socket.massive.com"
    assert config.massive.base_url == "https://api.massive.com"
    assert config.massive.api_key is None  # the producer says so in one line
    shell = {"MASSIVE_API_KEY": "real-key", "MASSIVE_SYMBOLS": "NVDA,TSLA",
             "MASSIVE_DATA_TYPES": "trades"}
    config = _load_content(bundled, Path("config.yaml"),
                           _container_env(services, "producer", shell))
    assert config.massive.api_key == "real-key"
    assert (config.massive.symbols, config.massive.data_types) == (["NVDA", "TSLA"], ["trades"])
    assert config.metrics.host == "0.0.0.0"
    assert config.kafka.bootstrap_servers == "kafka:9092"


def test_a_users_config_yaml_gets_the_container_addresses(services: dict[str, Any]) -> None:
    """The user's own file, written for their host: the environment puts the containers'
    Kafka, MarketStore and metrics host over it, and MASSIVE_SYMBOLS still wins."""
    users = ("massive:\n  api_key: from-file\n  symbols: [SPY]\n  data_types: [bars]\n"
             "kafka:\n  bootstrap_servers: localhost:9092\n"
             "marketstore:\n  url: http://localhost:5993/rpc\n")
    config = _load_content(users, Path("config.yaml"),
                           _container_env(services, "consumer", {"MASSIVE_SYMBOLS": "QQQ"}))
    assert config.massive.api_key == "from-file"
    assert config.massive.symbols == ["QQQ"] and config.massive.data_types == ["bars"]
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.marketstore.url == "http://marketstore:5993/rpc"
    assert config.metrics.host == "0.0.0.0"


def test_the_simulator_is_a_profile_its_env_file_turns_on(compose: dict[str, Any],
                                                          services: dict[str, Any]) -> None:
    assert services["simulator"]["profiles"] == ["simulator"]
    for name in ("producer", "backfill"):
        wait = services[name]["depends_on"]["simulator"]
        assert wait == {"condition": "service_healthy", "required": False}, name
    demo = env_file(SIMULATOR_ENV)
    assert demo["COMPOSE_PROFILES"] == "simulator"
    port = PYTHON_PARTS["simulator"][2]
    config = _load_content(config_content(compose, "massive-fetcher-config"),
                           Path("config.yaml"), _container_env(services, "producer", demo))
    assert config.massive.ws_server == f"ws://simulator:{port}"
    assert config.massive.base_url == f"http://simulator:{port}"
    assert config.massive.api_key == "demo"


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
    for name in ("producer", "consumer", "kafka", "marketstore"):
        assert "profiles" not in services[name]


def test_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])
            if not v.startswith(("$", "."))}  # bind mounts of the checkout
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
    assert "--config" not in argv and "-c" not in argv  # the entrypoint chooses
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


def test_dockerfile_caches_the_compiler_and_exposes_only_used_ports() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    lines = dockerfile.splitlines()
    first = {word: next(i for i, line in enumerate(lines) if word in line)
             for word in ("install -y --no-install-recommends gcc", "COPY . .",
                          "pip install -r /tmp/requirements.txt", "COPY --from=build")}
    # the compiler and the pinned dependencies are layers before any of the code
    assert first["install -y --no-install-recommends gcc"] < first["COPY . ."]
    assert first["pip install -r /tmp/requirements.txt"] < first["COPY --from=build"]
    exposed = {int(p) for line in lines if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert exposed == {port for _, _, port in PYTHON_PARTS.values()}
    assert 'ENTRYPOINT ["massive-fetcher-entrypoint"]' in dockerfile
    assert "COPY docker/entrypoint.sh /usr/local/bin/massive-fetcher-entrypoint" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    assert not {"docker", "docker/entrypoint.sh"} & set(ignored)


def _chosen(local: Path, bundled: Path, **env: str) -> str:
    """The config docker/entrypoint.sh hands the command, run by the real shell script."""
    run_env = {"PATH": os.environ["PATH"], "LOCAL_CONFIG_DIR": str(local),
               "BUNDLED_CONFIG": str(bundled), **env}
    out = subprocess.run(["sh", str(ENTRYPOINT), "sh", "-c",
                          'printf %s "$MASSIVE_FETCHER_CONFIG"'],
                         env=run_env, capture_output=True, text=True, timeout=30, check=True)
    return out.stdout


def test_entrypoint_prefers_config_yaml_then_mkts_yml_then_the_bundled(tmp_path: Path) -> None:
    local, bundled = tmp_path / "checkout", tmp_path / "bundled.yaml"
    local.mkdir()
    bundled.write_text("{}\n")
    assert _chosen(local, bundled) == str(bundled)
    (local / "mkts.yml").write_text("{}\n")
    assert _chosen(local, bundled) == str(local / "mkts.yml")
    (local / "config.yaml").write_text("{}\n")
    assert _chosen(local, bundled) == str(local / "config.yaml")
    assert _chosen(local, bundled, MASSIVE_FETCHER_CONFIG="/x.yaml") == "/x.yaml"
    # the defaults it falls back on are where compose mounts things
    script = ENTRYPOINT.read_text()
    assert f"${{LOCAL_CONFIG_DIR:-{LOCAL_DIR}}}" in script
    assert f"${{BUNDLED_CONFIG:-{CONFIG_PATH}}}" in script
    assert os.access(ENTRYPOINT, os.X_OK)


def test_make_run_with_compose_uses_the_simulator_only_without_a_key_or_config(
        tmp_path: Path) -> None:
    from massive_fetcher.pipeline import compose_argv

    compose = tmp_path / "compose.yaml"
    demo = ["--env-file", str(tmp_path / "compose.simulator.env")]
    assert compose_argv(compose, {})[-4:] == [*demo, "up", "--build"]
    assert not set(demo) & set(compose_argv(compose, {"MASSIVE_API_KEY": "k"}))
    (tmp_path / "mkts.yml").write_text("{}\n")
    assert not set(demo) & set(compose_argv(compose, {}))
