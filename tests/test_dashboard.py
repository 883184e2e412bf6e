"""The Grafana dashboard queries only metrics the parts really export.

The exported names come from the parts' own Prometheus collectors, built the way their CLIs
build them (consumer: ``ConsumerMetrics``; producer: ``ProducerSession`` + the publisher's
collector; backfill: the progress collector over a ``BackfillEngine`` + the publisher's
collector), with nothing networked started: the publisher stands in for librdkafka with plain
counters, the REST client never opens its session.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from backfill.cli import _ProgressCollector
from backfill.client import MassiveRestClient
from backfill.engine import BackfillEngine
from common.config import Config
from consumer.service import ConsumerMetrics
from dashboards import build
from producer.publisher import _PublisherCollector
from producer.session import ProducerSession
from schemas.codec import make_codec

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "massive-fetcher.grafana.json"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"), "info": ("_info",)}


def _fake_publisher(client_id: str) -> SimpleNamespace:
    """What ``_PublisherCollector`` reads from a ``Publisher`` (whose constructor starts
    librdkafka's threads, which connect)."""
    return SimpleNamespace(client_id=client_id, delivered=3, failed=0, backpressure_waits=0,
                           backpressure_seconds=0.0, queue_depth=0,
                           produced_by_kind={"bar": 1, "trade": 1, "quote": 1})


def _consumer_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    for metric in vars(metrics).values():  # a labelled metric has samples only per child
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*["x"] * len(metric._labelnames))
    return registry


def _producer_registry() -> CollectorRegistry:
    config = Config()
    config = config.replace(massive=dataclasses.replace(
        config.massive, api_key="test-key", data_types=["bars", "trades", "quotes"]))
    registry = CollectorRegistry()
    publisher = _fake_publisher("producer")  # producer/cli.py's client_id
    registry.register(_PublisherCollector(publisher))  # type: ignore[arg-type]
    session = ProducerSession(config, publisher, codec=make_codec(config),  # type: ignore[arg-type]
                              registry=registry)
    session.lag_ns = 1_000_000  # the lag gauges exist once an event was received
    session.newest_event_ns = 1
    session.stats.malformed["bad_json"] += 1
    session.stats.statuses["connected"] += 1
    return registry


def _backfill_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_PublisherCollector(_fake_publisher("backfill")))  # type: ignore[arg-type]
    engine = BackfillEngine(MassiveRestClient("test-key", "http://127.0.0.1:9"),
                            sink=object(), encoder=object(), checkpoint=None)  # type: ignore[arg-type]
    registry.register(_ProgressCollector({"engine": engine}))
    return registry


def exported() -> dict[str, set[str]]:
    """Every sample name the parts export -> its label names."""
    out: dict[str, set[str]] = {}
    for registry in (_consumer_registry(), _producer_registry(), _backfill_registry()):
        for family in registry.collect():
            for suffix in SUFFIXES.get(family.type, ("",)):
                out.setdefault(family.name + suffix, set())
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(sample.labels)
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords, labels or numbers)."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(GROUPING, " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group() in KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def label_names(expr: str, legend: str) -> set[str]:
    labels = {name.strip() for group in re.findall(GROUPING, expr)
              for name in group.split(",") if name.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return labels | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def _panels(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in node.get("panels", []):
        out.append(p)
        out += _panels(p)
    return out


def _targets() -> list[tuple[str, dict[str, Any]]]:
    board = json.loads(DASHBOARD.read_text())
    return [(p["title"], t) for p in _panels(board) for t in p.get("targets", [])]


def test_metric_name_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, type) (rate(a_bucket{job="x",b!~"y"}'
            '[$__rate_interval]))) / on (type) group_left b:c_total * 1e9 + offset_x')
    assert metric_names(expr) == {"a_bucket", "b:c_total", "offset_x"}
    assert label_names(expr, "{{ type }} {{q}}") == {"le", "type", "job", "b", "q"}


def test_every_query_uses_exported_metrics_and_labels() -> None:
    names = exported()
    targets = _targets()
    assert len(targets) >= 20
    for title, target in targets:
        used = metric_names(target["expr"])
        assert used, f"{title}: no metric in {target['expr']!r}"
        unknown = used - names.keys()
        assert not unknown, f"{title}: {sorted(unknown)} not exported by the code"
        labels = set().union(*(names[n] for n in used))
        missing = label_names(target["expr"], target.get("legendFormat", "")) - labels
        assert not missing, f"{title}: labels {sorted(missing)} not on {sorted(used)}"


def test_dashboard_covers_the_operational_metrics() -> None:
    used = set().union(*(metric_names(t["expr"]) for _, t in _targets()))
    required = {
        "producer_events_total", "producer_reconnects_total", "producer_parse_errors_total",
        "producer_queue_depth", "producer_event_lag_seconds", "producer_gaps_total",
        "consumer_events_written_total", "consumer_batch_events_bucket",
        "consumer_write_seconds_bucket", "consumer_end_to_end_seconds_bucket",
        "consumer_lag", "consumer_dead_letter_total", "consumer_duplicates_dropped_total",
        "consumer_marketstore_errors_total", "consumer_bucket_repairs_total",
        "massive_backfill_records_total",
    }
    assert required <= used, sorted(required - used)
    exprs = " ".join(t["expr"] for _, t in _targets())
    for metric in ("consumer_write_seconds", "consumer_end_to_end_seconds"):
        assert f"histogram_quantile(0.99, sum by (le) (rate({metric}_bucket" in exprs


def test_dashboard_uses_the_datasource_variable_and_is_built_from_its_source() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in _panels(board):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    ids = [p["id"] for p in _panels(board)]
    assert len(ids) == len(set(ids))
    assert DASHBOARD.read_text() == build.render(), "run: python -m dashboards.build"
