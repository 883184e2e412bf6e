"""Readiness probes with real client requests (a listening port is not enough)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from common.kafka import silent_logger
from services.process import port_open

# librdkafka's connection-refused chatter while a broker boots
_quiet = silent_logger("services.probe")


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or address).strip("[]"), int(port) if port.isdigit() else default_port


def kafka_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker answers a metadata request and lists at least one broker."""
    first = bootstrap.split(",")[0].strip()
    if not port_open(*_host_port(first, 9092)):
        return False
    # Any: the stub's config values leave out the logger object librdkafka takes
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _quiet,
                            "socket.connection.setup.timeout.ms": int(timeout_s * 1000)}
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def marketstore_answers(url: str) -> bool:
    """True when MarketStore answers a JSON-RPC call (ListSymbols)."""
    parts = urlsplit(url)
    if not parts.hostname or not port_open(parts.hostname, parts.port or 5993):
        return False
    import pymarketstore as pymkts  # pandas under it: only once the port is open

    try:
        pymkts.Client(url).list_symbols()
    except Exception:  # any failure (HTTP, decode, RPC error) means "not ready yet"
        return False
    return True


def registry_answers(url: str) -> bool:
    """True when a Confluent-compatible registry answers GET /subjects (any HTTP answer:
    a 401 of a registry that wants credentials is an answer too)."""
    parts = urlsplit(url)
    if not parts.hostname or not port_open(parts.hostname, parts.port or 80):
        return False
    try:
        requests.get(url.rstrip("/") + "/subjects", timeout=3)
    except requests.RequestException:
        return False
    return True
