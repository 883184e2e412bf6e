"""The producer against a real schema registry: refusals before anything is produced, the
registry down at start, basic auth (Apicurio with Quarkus' embedded users) and the bearer
header. Codec-level behaviour (register on first use, evolution) is in test_schemas_codec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from schemas.codec import load_schema, make_codec
from schemas.registry import Registry, RegistryError
from services.process import free_port
from tests.support.registry import (
    private_registry,
    record_requests,
    registry_config,
    unique_prefix,
)
from tests.support.samples import sample

# every test here runs against a real registry process (some start their own)
pytestmark = pytest.mark.integration

EXIT_REGISTRY_FAILED = 6
PASSWORD = "pw-9f3b71c2"


def _producer(tmp_path: Path, bootstrap: str, prefix: str, registry: dict[str, Any],
              ) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "producer.yaml"
    path.write_text(yaml.safe_dump({
        "massive": {"api_key": "test-key", "ws_server": f"ws://127.0.0.1:{free_port()}",
                    "data_types": ["trades"]},
        "kafka": {"bootstrap_servers": bootstrap,
                  "topics": {"bars": f"{prefix}.bars", "trades": f"{prefix}.trades",
                             "quotes": f"{prefix}.quotes", "dead_letter": f"{prefix}.dlq"}},
        "schema_registry": registry,
        "producer": {"gaps_file": str(tmp_path / "gaps.jsonl")},
        "metrics": {"enabled": False},
    }))
    return subprocess.run([sys.executable, "-m", "massive_fetcher", "producer", "--config",
                           str(path)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def _topics(bootstrap: str, prefix: str) -> list[str]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    return [name for name in metadata.topics if name.startswith(prefix)]


def test_an_incompatible_schema_is_refused_before_anything_is_produced(
        kafka_bootstrap: str, schema_registry_url: str, tmp_path: Path) -> None:
    prefix = unique_prefix("incompatible")
    # An earlier trade schema without `price`: ours adds it without a default, so it cannot
    # read that data (BACKWARD) and the registry refuses it.
    earlier = load_schema("trade")
    earlier["fields"] = [f for f in earlier["fields"] if f["name"] != "price"]
    probe = Registry(registry_config(schema_registry_url).schema_registry)
    probe.register(f"{prefix}.trades-value", earlier)

    done = _producer(tmp_path, kafka_bootstrap, prefix, {"url": schema_registry_url})
    assert done.returncode == EXIT_REGISTRY_FAILED, done.stderr
    line = _error_line(done)
    assert "HTTP 409" in line and "incompatible" in line and "nothing was produced" in line
    assert _topics(kafka_bootstrap, prefix) == []  # not even created
    assert probe.client.get_versions(f"{prefix}.trades-value") == [1]


def test_the_registry_down_at_start_is_one_line_and_exit_6(kafka_bootstrap: str,
                                                           tmp_path: Path) -> None:
    prefix = unique_prefix("down")
    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    done = _producer(tmp_path, kafka_bootstrap, prefix, {"url": url, "timeout_s": 2})
    assert done.returncode == EXIT_REGISTRY_FAILED, done.stderr
    line = _error_line(done)
    assert url in line and "unreachable" in line
    assert _topics(kafka_bootstrap, prefix) == []


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with private_registry(tmp_path_factory.mktemp("auth-registry"),
                          users={"alice": PASSWORD}) as handle:
        yield handle.registry_url


def test_basic_auth_with_the_right_password_registers_and_reads(auth_registry: str) -> None:
    config = registry_config(auth_registry, unique_prefix("auth"),
                             basic_auth_user_info=f"alice:{PASSWORD}")
    writer, reader = make_codec(config), make_codec(config)
    sent = record_requests(writer)
    data = writer.encode("trade", sample("trade"))
    assert reader.decode(data) == ("trade", sample("trade"))
    assert sent and all(m in ("PUT", "POST") for m, _ in sent)
    private = (auth_registry.replace("http://", f"http://alice:{PASSWORD}@"))
    assert Registry(registry_config(private).schema_registry).schema_by_id(
        int.from_bytes(data[1:5], "big"))  # credentials in the URL work as well


@pytest.mark.parametrize("user_info", [None, "alice:wrong"], ids=["none", "wrong"])
def test_basic_auth_refusal_is_a_registry_error_naming_the_key(auth_registry: str,
                                                               user_info: str | None) -> None:
    codec = make_codec(registry_config(auth_registry, unique_prefix("noauth"),
                                       basic_auth_user_info=user_info))
    with pytest.raises(RegistryError, match="HTTP 401") as caught:
        codec.encode("trade", sample("trade"))
    assert "basic_auth_user_info" in str(caught.value)
    assert "wrong" not in str(caught.value)


def test_the_producer_with_a_wrong_password_exits_6_without_showing_it(
        kafka_bootstrap: str, auth_registry: str, tmp_path: Path) -> None:
    prefix = unique_prefix("wrongpw")
    secret = "not-the-password-5e1d"
    done = _producer(tmp_path, kafka_bootstrap, prefix,
                     {"url": auth_registry, "basic_auth_user_info": f"alice:{secret}"})
    assert done.returncode == EXIT_REGISTRY_FAILED, done.stderr
    assert "HTTP 401" in _error_line(done)
    assert secret not in done.stderr + done.stdout
    assert _topics(kafka_bootstrap, prefix) == []


def test_a_bearer_token_goes_out_as_an_authorization_header(schema_registry_url: str) -> None:
    """Apicurio checks bearer tokens only against an OpenID Connect server, which this test
    does not run; what the client sends is checked on the real requests instead (the
    registry, without auth, ignores the header and answers)."""
    config = registry_config(schema_registry_url, unique_prefix("bearer"),
                             bearer_token="tok-123", bearer_logical_cluster="lsrc-1")
    codec = make_codec(config)
    headers: list[dict[str, str]] = []
    session = codec._registry.client._rest_client.session  # type: ignore[union-attr]
    session.event_hooks = {"request": [lambda request: headers.append(dict(request.headers))]}
    codec.encode("bar", sample("bar"))
    assert headers and all(h["authorization"] == "Bearer tok-123" for h in headers)
    assert all(h["target-sr-cluster"] == "lsrc-1" for h in headers)
    assert "tok-123" not in repr(config) and "tok-123" not in json.dumps(str(config))


def test_doctor_checks_the_registry_with_its_credentials(auth_registry: str) -> None:
    from massive_fetcher.doctor import check_registry

    good = registry_config(auth_registry, basic_auth_user_info=f"alice:{PASSWORD}")
    check = check_registry(good, timeout_s=10)
    assert check is not None and check.ok, check
    bad = registry_config(auth_registry, basic_auth_user_info="alice:nope-77")
    check = check_registry(bad, timeout_s=10)
    assert check is not None and not check.ok
    assert "HTTP 401" in check.detail and "nope-77" not in check.detail
