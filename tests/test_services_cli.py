"""``massive-fetcher services up | status | down`` through the real CLI on private ports.

Ports are free ephemeral ones (far from the shared 19092/15993 and the defaults 9092/5993),
the state dir is private, the build cache is the user's (so nothing is rebuilt).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pymarketstore as pymkts
import pytest
import requests
import yaml
from confluent_kafka.admin import AdminClient

from common.config import ServicesConfig
from services.base import MissingToolError, ServiceError
from services.native import NativeServices
from services.process import cmdline, find_processes, free_port, port_open, read_pid

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


def cli(*args: str, env: dict[str, str] | None = None,
        timeout_s: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "massive_fetcher", "services", *args],
                          capture_output=True, text=True, timeout=timeout_s, env=env,
                          check=False)


@pytest.fixture
def settings(tmp_path: Path) -> ServicesConfig:
    return ServicesConfig(kafka_port=free_port(), kafka_controller_port=free_port(),
                          marketstore_port=free_port(), marketstore_grpc_port=free_port(),
                          state_dir=str(tmp_path / "state"))


@pytest.fixture
def config_file(tmp_path: Path, settings: ServicesConfig) -> Path:
    path = tmp_path / "config.yaml"
    fields = ("kafka_port", "kafka_controller_port", "marketstore_port",
              "marketstore_grpc_port", "state_dir")
    path.write_text(yaml.safe_dump({"services": {f: getattr(settings, f) for f in fields}}))
    return path


def test_up_status_down_leave_no_process_and_no_port(settings: ServicesConfig,
                                                     config_file: Path) -> None:
    state = Path(settings.state_dir or "")
    ports = [settings.kafka_port, settings.kafka_controller_port, settings.marketstore_port,
             settings.marketstore_grpc_port]
    try:
        up = cli("up", "--config", str(config_file))
        assert up.returncode == 0, up.stderr + up.stdout
        assert "kafka" in up.stdout and "marketstore" in up.stdout and "started" in up.stdout

        pids = {name: read_pid(state / name / f"{name}.pid") for name in ("kafka", "marketstore")}
        assert all(pids.values()), pids
        assert "kafka.Kafka" in (cmdline(pids["kafka"]) or [])
        assert any("marketstore" in arg for arg in cmdline(pids["marketstore"]) or [])
        assert set(find_processes(str(state))) == set(pids.values())

        # Both answer real client requests on the configured ports.
        bootstrap = f"{HOST}:{settings.kafka_port}"
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert list(metadata.brokers) == [1]
        url = f"http://{HOST}:{settings.marketstore_port}/rpc"
        assert isinstance(pymkts.Client(url).list_symbols(), list)

        status = cli("status", "--config", str(config_file))
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert len(lines) == 2
        assert lines[0].split()[:2] == ["kafka", "running"] and str(pids["kafka"]) in lines[0]
        assert bootstrap in lines[0]
        assert lines[1].split()[:2] == ["marketstore", "running"] and url in lines[1]

        again = cli("up", "--config", str(config_file))
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already running") == 2
        assert set(find_processes(str(state))) == set(pids.values())

        down = cli("down", "--config", str(config_file))
        assert down.returncode == 0, down.stderr
        assert f"stopped  pid {pids['kafka']}" in down.stdout
        assert f"stopped  pid {pids['marketstore']}" in down.stdout
    finally:
        cli("down", "--config", str(config_file))

    assert find_processes(str(state)) == []
    assert [port for port in ports if port_open(HOST, port)] == []
    assert not list(state.glob("*/*.pid"))
    status = cli("status", "--config", str(config_file))
    assert status.returncode == 3
    assert [line.split()[1] for line in status.stdout.splitlines()] == ["stopped", "stopped"]
    # A second down has nothing to do and says so.
    assert cli("down", "--config", str(config_file)).stdout.count("not running") == 2


def test_missing_java_is_one_clear_line(tmp_path: Path, config_file: Path) -> None:
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin)}
    result = cli("up", "--config", str(config_file), env=env, timeout_s=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "missing java" in lines[0] and "install" in lines[0] and "Java 17" in lines[0]
    assert not list((tmp_path / "state").glob("*/*.pid"))


def test_missing_tools_are_named_together(settings: ServicesConfig,
                                          monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    # An empty cache needs Maven and Go as well; one message names all three.
    cold = dataclasses.replace(settings, cache_dir=str(tmp_path / "cold"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError) as caught:
        NativeServices(cold).up()
    message = str(caught.value)
    assert "missing java, mvn, go" in message
    assert "apt-get install maven" in message and "go.dev" in message
    assert not (tmp_path / "cold").exists()


def test_down_never_signals_a_pid_that_is_not_ours(settings: ServicesConfig) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        handle = NativeServices(settings)
        handle.marketstore.home.mkdir(parents=True)
        handle.marketstore.pid_file.write_text(f"{stranger.pid}\n")
        assert handle.status()[1].running is False
        results = handle.down()
        assert [r.pid for r in results] == [None, None]
        assert stranger.poll() is None, "down killed a process it did not start"
        assert not handle.marketstore.pid_file.exists()  # the stale pid file is gone
    finally:
        stranger.kill()
        stranger.wait()


def test_up_refuses_a_port_taken_by_someone_else(settings: ServicesConfig) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind((HOST, settings.marketstore_port))
        taken.listen()
        with pytest.raises(ServiceError, match=f"port {settings.marketstore_port} .* in use"):
            NativeServices(settings).up(["marketstore"])
    assert not NativeServices(settings).marketstore.pid_file.exists()


def test_up_registry_status_down_by_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port, management = free_port(), free_port()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"services": {
        "registry_port": port, "registry_management_port": management,
        "state_dir": str(state)}}))
    url = f"http://{HOST}:{port}/apis/ccompat/v7"
    try:
        up = cli("up", "registry", "--config", str(path))
        assert up.returncode == 0, up.stderr + up.stdout
        assert f"SCHEMA_REGISTRY_URL={url}" in up.stdout
        pid = read_pid(state / "registry" / "registry.pid")
        assert pid is not None and find_processes(str(state)) == [pid]
        assert any(arg.endswith("quarkus-run.jar") for arg in cmdline(pid) or [])
        # A Confluent-compatible API: registering answers an id.
        reply = requests.post(f"{url}/subjects/probe-value/versions", timeout=30,
                              json={"schema": '{"type": "string"}'})
        assert reply.status_code == 200 and isinstance(reply.json()["id"], int), reply.text

        status = cli("status", "--config", str(path))  # the registry is listed while it runs
        lines = {line.split()[0]: line for line in status.stdout.splitlines()}
        assert lines["registry"].split()[1] == "running" and str(pid) in lines["registry"]

        down = cli("down", "--config", str(path))
        assert f"registry     stopped  pid {pid}" in down.stdout, down.stdout
    finally:
        cli("down", "registry", "--config", str(path))
    assert find_processes(str(state)) == []
    assert not port_open(HOST, port) and not port_open(HOST, management)
