"""``massive-fetcher doctor`` against the real servers: all good, a missing topic, a dead
MarketStore and a dead broker are each reported on their own line with the fix."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace

import pytest

from common.config import TopicsConfig, load_config
from massive_fetcher.doctor import run_checks
from schemas.topics import ensure_topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(kafka: str, marketstore: str, prefix: str):
    base = load_config(None, env={})
    topics = TopicsConfig(**{k: f"{prefix}.{k}" for k in ("bars", "trades", "quotes",
                                                          "dead_letter")})
    return base.replace(
        kafka=replace(base.kafka, bootstrap_servers=kafka, topics=topics, partitions=2),
        marketstore=replace(base.marketstore, url=marketstore))


@pytest.fixture()
def prefix() -> str:
    return f"doctor-{uuid.uuid4().hex[:8]}"


def test_all_good(kafka_bootstrap: str, marketstore_url: str, prefix: str) -> None:
    config = make_config(kafka_bootstrap, marketstore_url, prefix)
    ensure_topics(config)
    checks = run_checks(config)
    assert [c.name for c in checks] == ["kafka", "topic bars", "topic trades", "topic quotes",
                                        "topic dead_letter", "marketstore", "native paths"]
    assert all(c.ok for c in checks), [c.line() for c in checks]


def test_missing_topic_and_stopped_marketstore(kafka_bootstrap: str, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/rpc"
    config = make_config(kafka_bootstrap, dead, prefix)
    checks = {c.name: c for c in run_checks(config, timeout_s=3)}
    assert checks["kafka"].ok
    assert not checks["topic trades"].ok
    assert "is missing: run `massive-fetcher topics create`" in checks["topic trades"].detail
    assert not checks["marketstore"].ok
    assert dead in checks["marketstore"].detail
    assert "massive-fetcher services up" in checks["marketstore"].line()


def test_unreachable_broker(marketstore_url: str, prefix: str) -> None:
    config = make_config(f"127.0.0.1:{free_port()}", marketstore_url, prefix)
    checks = {c.name: c for c in run_checks(config, timeout_s=2)}
    assert not checks["kafka"].ok and "no broker answers" in checks["kafka"].detail
    assert not checks["topics"].ok
    assert checks["marketstore"].ok


def test_too_few_partitions_warns_that_changing_them_rehomes_symbols(
        kafka_bootstrap: str, marketstore_url: str, prefix: str) -> None:
    config = make_config(kafka_bootstrap, marketstore_url, prefix)
    ensure_topics(config)  # 2 partitions
    wants_more = config.replace(kafka=replace(config.kafka, partitions=6))
    checks = {c.name: c for c in run_checks(wants_more)}
    detail = checks["topic trades"].detail
    assert not checks["topic trades"].ok
    assert "has 2 partitions, the config asks for 6" in detail
    assert "re-homes symbols to other partitions" in detail
    # what to do: keep the count, or drain to zero lag with everything stopped, then alter
    assert "set kafka.partitions to 2" in detail
    assert "let the consumers drain to zero lag" in detail
    assert "--partitions 6" in detail
    assert checks["kafka"].ok and checks["marketstore"].ok
