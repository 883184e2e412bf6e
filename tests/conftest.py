"""Session fixtures: one real Kafka broker and one real MarketStore server per test session.

TEMPORARY minimal version: reads KAFKA_BOOTSTRAP_SERVERS / MARKETSTORE_URL from the
environment. The services helper replaces it with env -> testcontainers -> native services.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not value:
        pytest.fail("KAFKA_BOOTSTRAP_SERVERS not set (temporary conftest)")
    return value


@pytest.fixture(scope="session")
def marketstore_url() -> str:
    value = os.environ.get("MARKETSTORE_URL")
    if not value:
        pytest.fail("MARKETSTORE_URL not set (temporary conftest)")
    return value
