"""The registry client's configuration and messages (pure: no registry)."""

from __future__ import annotations

import pytest

from common.config import ConfigError, SchemaRegistryConfig, load_config
from schemas.registry import Registry, client_config, shown_url


def test_client_config_maps_every_key() -> None:
    settings = SchemaRegistryConfig(url="https://sr.example:8081", basic_auth_user_info="u:p",
                                    bearer_token="t", bearer_logical_cluster="lsrc-1",
                                    ssl_ca_location="/etc/ca.pem", timeout_s=3.5)
    assert client_config(settings) == {
        "url": "https://sr.example:8081", "timeout": 3.5, "basic.auth.user.info": "u:p",
        "bearer.auth.credentials.source": "STATIC_TOKEN", "bearer.auth.token": "t",
        "bearer.auth.logical.cluster": "lsrc-1", "ssl.ca.location": "/etc/ca.pem"}
    assert client_config(SchemaRegistryConfig(url="http://x")) == {"url": "http://x",
                                                                   "timeout": 10.0}


def test_secrets_stay_out_of_repr_and_urls() -> None:
    settings = SchemaRegistryConfig(url="http://a:b@h:1/x", basic_auth_user_info="u:secret-1",
                                    bearer_token="secret-2")
    assert "secret-1" not in repr(settings) and "secret-2" not in repr(settings)
    assert shown_url("http://alice:pw@127.0.0.1:8081/apis") == "http://127.0.0.1:8081/apis"
    assert shown_url("http://127.0.0.1:8081") == "http://127.0.0.1:8081"


def test_bad_basic_auth_info_is_a_config_error_without_the_value() -> None:
    with pytest.raises(ConfigError, match=r"basic\.auth\.user\.info") as caught:
        Registry(SchemaRegistryConfig(url="http://127.0.0.1:1", basic_auth_user_info="nocolon"))
    assert "nocolon" not in str(caught.value)


def test_env_overrides_carry_the_credentials() -> None:
    config = load_config(None, env={"SCHEMA_REGISTRY_URL": "http://r",
                                    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p",
                                    "SCHEMA_REGISTRY_BEARER_TOKEN": "t"})
    assert config.schema_registry.basic_auth_user_info == "u:p"
    assert config.schema_registry.bearer_token == "t"
