"""A real schema registry for tests: a private native one, and a count of its HTTP requests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from common.config import Config, KafkaConfig, SchemaRegistryConfig, ServicesConfig, TopicsConfig
from schemas.codec import Codec
from services.base import ServiceError
from services.native import NativeServices
from services.process import free_port


def registry_settings(state_dir: Path) -> ServicesConfig:
    return ServicesConfig(registry_port=free_port(), registry_management_port=free_port(),
                          state_dir=str(state_dir))


@contextlib.contextmanager
def private_registry(state_dir: Path, users: dict[str, str] | None = None,
                     ) -> Iterator[NativeServices]:
    """A registry of the test's own (it may kill it), stopped by pid afterwards."""
    handle = NativeServices(registry_settings(state_dir), die_with_parent=True,
                            registry_users=users)
    try:
        handle.up(["registry"])
    except ServiceError as exc:
        pytest.fail(f"could not start a native schema registry: {exc}", pytrace=False)
    try:
        yield handle
    finally:
        handle.down(["registry"])


def unique_prefix(name: str) -> str:
    """Topic prefix of one test: subjects never collide in a shared registry."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def registry_config(url: str, prefix: str = "t", **settings: Any) -> Config:
    topics = TopicsConfig(bars=f"{prefix}.bars", trades=f"{prefix}.trades",
                          quotes=f"{prefix}.quotes", dead_letter=f"{prefix}.dlq")
    return Config(kafka=KafkaConfig(topics=topics),
                  schema_registry=SchemaRegistryConfig(url=url, **settings))


def record_requests(codec: Codec) -> list[tuple[str, str]]:
    """(method, path) of every HTTP request the codec's registry client sends from now on,
    path relative to the registry URL (e.g. ``/schemas/ids/1``)."""
    registry = codec._registry
    assert registry is not None, "a codec without a registry"
    base = urlsplit(registry.url).path.rstrip("/")
    seen: list[tuple[str, str]] = []

    def hook(request: Any) -> None:
        seen.append((request.method, request.url.path.removeprefix(base)))

    session = registry.client._rest_client.session
    session.event_hooks = {**session.event_hooks,
                           "request": [*session.event_hooks.get("request", []), hook]}
    return seen
