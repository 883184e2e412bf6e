"""Builds ``dashboards/massive-fetcher.grafana.json``: ``python -m dashboards.build``.

The JSON is committed (import it in Grafana: Dashboards -> New -> Import, then pick a
Prometheus data source for ``datasource``); this script is its source so panels stay uniform.
``tests/test_dashboard.py`` checks that every metric a query uses is exported by the code and
that the committed JSON is what this script builds.

Metrics come from three scrape targets (``metrics.*_port`` in the config): the producer
(``massive_fetcher_producer_*``), the consumer (``massive_fetcher_consumer_*``) and the
backfill (``massive_fetcher_backfill_*``); the producer's and the backfill's Kafka clients
export ``massive_fetcher_kafka_*`` with their ``client_id`` as a label, and every part the
standard ``process_*``. The ``job`` and ``instance`` variables narrow every panel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.metrics import NAMESPACE

OUT = Path(__file__).with_name("massive-fetcher.grafana.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
WIDTH = 8
HEIGHT = 8


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def panel(title: str, unit: str, *queries: tuple[str, str], description: str = "",
          kind: str = "timeseries") -> dict[str, Any]:
    return {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [_target(e, legend, chr(ord("A") + i))
                    for i, (e, legend) in enumerate(queries)],
    }


def m(name: str, **labels: str) -> str:
    """A project metric, narrowed to the chosen jobs and instances (and ``labels``)."""
    matchers = [*(f'{k}="{v}"' for k, v in labels.items()),
                'job=~"$job"', 'instance=~"$instance"']
    return f"{NAMESPACE}_{name}{{{', '.join(matchers)}}}"


def rate(name: str, **labels: str) -> str:
    return f"rate({m(name, **labels)}[{RI}])"


def increase(name: str, **labels: str) -> str:
    return f"increase({m(name, **labels)}[{RI}])"


def quantile(q: float, metric: str) -> str:
    return f"histogram_quantile({q}, sum by (le) ({rate(metric + '_bucket')}))"


def process(metric: str) -> str:
    return f'{metric}{{job=~"$job", instance=~"$instance"}}'


PRODUCER = [
    panel("Producer events/s by type", "ops",
          (f"sum by (type) ({rate('producer_events_total')})", "{{type}}"),
          description="Events received over the WebSocket and queued for Kafka"),
    panel("Producer delivered to Kafka/s", "ops",
          (f"sum({rate('kafka_delivered_total', client_id='producer')})", "delivered"),
          (f"sum({rate('producer_frames_total')})", "WebSocket frames")),
    panel("Producer connection", "short",
          (f"max({m('producer_connected')})", "connected"),
          (f"sum({increase('producer_reconnects_total')})", "reconnects"),
          description="1 while connected and authenticated; reconnection attempts"),
    panel("Producer parse errors/s by reason", "ops",
          (f"sum by (reason) ({rate('producer_parse_errors_total')})", "{{reason}}"),
          description="Malformed frames or events skipped"),
    panel("Producer produce errors", "short",
          (f"sum({increase('kafka_delivery_failed_total', client_id='producer')})",
           "not acknowledged by Kafka"),
          (f"sum({increase('producer_encode_errors_total')})", "not encodable"),
          (f"sum({rate('kafka_backpressure_seconds_total', client_id='producer')})",
           "back-pressure (s waited per s)"),
          description="Records Kafka did not take; time publishing waited for queue room"),
    panel("Producer queue depth", "short",
          (f"sum({m('kafka_queue_depth', client_id='producer')})", "librdkafka queue"),
          description="Messages in librdkafka's local queue"),
    panel("Producer event lag", "s",
          (f"max({m('producer_event_lag_seconds')})", "receipt - event time"),
          description="Receipt time minus event time of the newest event of the last frame"),
    panel("Producer gaps", "short",
          (f"sum({increase('producer_gaps_total')})", "gaps recorded"),
          (f"sum({increase('producer_gaps_repaired_total')})", "gaps repaired"),
          (f"sum({increase('producer_gaps_unrepairable_total')})", "unrepairable"),
          (f"sum({increase('producer_gap_repairs_failed_total')})", "repairs failed"),
          description="Windows that may miss data (disconnects, Kafka delivery failures, "
                      "the producer's downtime), repaired from REST; unrepairable: wildcard "
                      "gaps whose symbols could not all be named"),
]

CONSUMER = [
    panel("Consumer events written/s by type", "ops",
          (f"sum by (type) ({rate('consumer_events_written_total')})", "{{type}}"),
          description="Rows written to MarketStore"),
    panel("Consumer batch size", "short",
          (quantile(0.5, "consumer_batch_events"), "p50"),
          (f"sum({rate('consumer_batch_events_sum')}) / "
           f"sum({rate('consumer_batch_events_count')})", "mean"),
          description="Events per flushed batch"),
    panel("Consumer write latency", "s",
          (quantile(0.5, "consumer_write_seconds"), "p50"),
          (quantile(0.99, "consumer_write_seconds"), "p99"),
          description="Time to flush one batch to MarketStore"),
    panel("End-to-end latency", "s",
          (quantile(0.5, "consumer_end_to_end_seconds"), "p50"),
          (quantile(0.99, "consumer_end_to_end_seconds"), "p99"),
          description="Producer receipt to queryable in MarketStore (sampled)"),
    panel("Consumer lag per partition", "short",
          (f"max by (topic, partition) ({m('consumer_lag')})", "{{topic}}:{{partition}}"),
          description="High watermark minus position"),
    panel("Dead-letter rate by reason", "ops",
          (f"sum by (reason) ({rate('consumer_dead_letter_total')})", "{{reason}}"),
          description="Messages sent to the dead-letter topic"),
    panel("Duplicates dropped/s", "ops",
          (f"sum({rate('consumer_duplicates_dropped_total')})", "duplicates"),
          description="Trades/quotes not written because MarketStore held them (replay, "
                      "rebalance)"),
    panel("MarketStore errors and bucket repairs", "short",
          (f"sum({increase('consumer_marketstore_errors_total')})", "MarketStore errors"),
          (f"sum({increase('consumer_bucket_repairs_total')})", "bucket repairs"),
          (f"sum({increase('consumer_bucket_failures_total')})", "bucket failures"),
          (f"sum({increase('consumer_buckets_quarantined_total')})", "buckets quarantined"),
          description="Each error rewinds and backs off; repairs rebuild buckets MarketStore "
                      "duplicated on WAL replay; a quarantined bucket's records go to the "
                      "dead-letter topic"),
    panel("Consumer commits/s", "ops",
          (f"sum({rate('consumer_commits_total')})", "commits")),
]

BACKFILL = [
    panel("Backfill records/s", "ops",
          (f"sum({rate('backfill_records_total')})", "published"),
          (f"sum({rate('kafka_delivered_total', client_id='backfill')})", "delivered to Kafka")),
    panel("Backfill windows", "short",
          (f"sum({m('backfill_windows_planned')})", "planned"),
          (f"sum by (outcome) ({m('backfill_windows_total')})", "{{outcome}}")),
    panel("Backfill REST requests/s", "ops",
          (f"sum({rate('backfill_http_requests_total')})", "requests"),
          (f"sum({rate('backfill_http_retries_total')})", "retries"),
          (f"sum({rate('backfill_http_throttled_total')})", "429 throttled")),
]

PROCESSES = [
    panel("CPU per process", "percentunit",
          (f"rate({process('process_cpu_seconds_total')}[{RI}])", "{{job}} {{instance}}"),
          description="CPU seconds per second (1 = one core busy)"),
    panel("Resident memory per process", "bytes",
          (process("process_resident_memory_bytes"), "{{job}} {{instance}}")),
    panel("Open file descriptors per process", "short",
          (process("process_open_fds"), "{{job}} {{instance}}"),
          (f"min({process('process_max_fds')})", "limit")),
    panel("Compiled hot paths active", "short",
          (m("native_paths_active"), "{{job}} {{instance}}"),
          description="1: schemas._native in use; 0: the Python paths run (same data, "
                      "slower): install gcc and reinstall"),
]


def _row(title: str, y: int, ident: int) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "id": ident,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value query variable, "All" by default, so one board serves every part and
    every consumer member, or just the ones picked."""
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0, "refresh": 2, "options": [], "regex": "", "sort": 1,
            "includeAll": True, "allValue": ".*", "multi": True}


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, ident = 0, 1
    for title, group in (("Producer", PRODUCER), ("Consumer", CONSUMER),
                         ("Backfill", BACKFILL), ("Processes", PROCESSES)):
        panels.append(_row(title, y, ident))
        y, ident = y + 1, ident + 1
        for i, p in enumerate(group):
            panels.append({**p, "id": ident,
                           "gridPos": {"h": HEIGHT, "w": WIDTH, "x": (i % 3) * WIDTH,
                                       "y": y + (i // 3) * HEIGHT}})
            ident += 1
        y += -(-len(group) // 3) * HEIGHT
    return {
        "title": "massive-fetcher", "uid": "massive-fetcher", "editable": True,
        "description": "Producer, consumer and backfill of massive-fetcher "
                       "(Massive -> Kafka -> MarketStore)",
        "tags": ["massive-fetcher", "kafka", "marketstore"],
        "timezone": "utc", "refresh": "10s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
             "options": [], "regex": "", "includeAll": False, "multi": False},
            _variable("job", "Job", f'label_values({{__name__=~"{NAMESPACE}_.+"}}, job)'),
            _variable("instance", "Instance",
                      f'label_values({{__name__=~"{NAMESPACE}_.+", job=~"$job"}}, instance)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> None:
    OUT.write_text(render())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
