"""The Prometheus registries of the producer, the consumer and the backfill, built the way
their CLIs build them, with nothing networked started: the publisher stands in for
librdkafka with plain counters, the REST client never opens its session."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from backfill.cli import _ProgressCollector
from backfill.client import MassiveRestClient
from backfill.engine import BackfillEngine
from common.config import Config
from common.metrics import new_registry
from consumer.metrics import ConsumerMetrics
from producer.publisher import _PublisherCollector
from producer.session import ProducerSession
from schemas.codec import make_codec


def _fake_publisher(client_id: str) -> SimpleNamespace:
    """What ``_PublisherCollector`` reads from a ``Publisher`` (whose constructor starts
    librdkafka's threads, which connect)."""
    return SimpleNamespace(client_id=client_id, delivered=3, failed=0, backpressure_waits=0,
                           backpressure_seconds=0.0, queue_depth=0,
                           produced_by_kind={"bar": 1, "trade": 1, "quote": 1})


def consumer_registry() -> CollectorRegistry:
    registry = new_registry()
    metrics = ConsumerMetrics(registry)
    for metric in vars(metrics).values():  # a labelled metric has samples only per child
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*["x"] * len(metric._labelnames))
    return registry


def producer_registry() -> CollectorRegistry:
    config = Config()
    config = config.replace(massive=dataclasses.replace(
        config.massive, api_key="test-key", data_types=["bars", "trades", "quotes"]))
    registry = new_registry()
    publisher = _fake_publisher("producer")  # producer/cli.py's client_id
    registry.register(_PublisherCollector(publisher))  # type: ignore[arg-type]
    session = ProducerSession(config, publisher, codec=make_codec(config),  # type: ignore[arg-type]
                              registry=registry)
    session.lag_ns = 1_000_000  # the lag gauges exist once an event was received
    session.newest_event_ns = 1
    session.stats.malformed["bad_json"] += 1
    session.stats.statuses["connected"] += 1
    return registry


def backfill_registry() -> CollectorRegistry:
    registry = new_registry()
    registry.register(_PublisherCollector(_fake_publisher("backfill")))  # type: ignore[arg-type]
    engine = BackfillEngine(MassiveRestClient("test-key", "http://127.0.0.1:9"),
                            sink=object(), encoder=object(), checkpoint=None)  # type: ignore[arg-type]
    registry.register(_ProgressCollector({"engine": engine}))
    return registry


def registries() -> dict[str, CollectorRegistry]:
    """Part name -> its registry."""
    return {"consumer": consumer_registry(), "producer": producer_registry(),
            "backfill": backfill_registry()}
