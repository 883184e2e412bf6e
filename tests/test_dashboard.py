"""The Grafana dashboard queries only metrics the parts really export.

The exported names come from the parts' own Prometheus collectors, built the way their CLIs
build them (``tests/support/partmetrics.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from common.metrics import NAMESPACE
from dashboards import build
from tests.support.partmetrics import registries

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboards" / "massive-fetcher.grafana.json"
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every series it scrapes
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"), "info": ("_info",)}


def exported() -> dict[str, set[str]]:
    """Every sample name the parts export -> its label names (with Prometheus's own)."""
    out: dict[str, set[str]] = {}
    for registry in registries().values():
        for family in registry.collect():
            for suffix in SUFFIXES.get(family.type, ("",)):
                out.setdefault(family.name + suffix, set())
            for sample in family.samples:
                out.setdefault(sample.name, set()).update(sample.labels)
    for labels in out.values():
        labels.update(SCRAPE_LABELS)
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
    required = {f"{NAMESPACE}_{name}" for name in (
        "producer_events_total", "producer_reconnects_total", "producer_parse_errors_total",
        "kafka_queue_depth", "producer_event_lag_seconds", "producer_gaps_total",
        "consumer_events_written_total", "consumer_batch_events_bucket",
        "consumer_write_seconds_bucket", "consumer_end_to_end_seconds_bucket",
        "consumer_lag", "consumer_dead_letter_total", "consumer_duplicates_dropped_total",
        "consumer_marketstore_errors_total", "consumer_bucket_repairs_total",
        "backfill_records_total",
    )} | {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"}
    assert required <= used, sorted(required - used)
    exprs = " ".join(t["expr"] for _, t in _targets())
    for metric in ("consumer_write_seconds", "consumer_end_to_end_seconds"):
        assert (f"histogram_quantile(0.99, sum by (le) (rate({NAMESPACE}_{metric}_bucket"
                in exprs)


def test_every_query_follows_the_job_and_instance_variables() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] and variables[name]["multi"]
        assert f"{name})" in variables[name]["definition"]
    assert '$job' in variables["instance"]["definition"]
    for title, target in _targets():
        for matchers in _selectors(target["expr"]):
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, \
                f"{title}: {target['expr']!r}"


def _selectors(expr: str) -> list[str]:
    """The label matchers of every metric in ``expr`` (a metric without any gives "")."""
    e = re.sub(r"\[[^\]]*\]", " ", expr)
    return [m.group(2) or "" for m in re.finditer(r"\b([a-z_:][a-z0-9_:]*)(\{[^}]*\})?", e)
            if m.group(1) in metric_names(expr)]


def test_one_prefix_no_duplicate_series_and_the_process_collector() -> None:
    for part, registry in registries().items():
        families = [f.name for f in registry.collect()]
        assert len(families) == len(set(families)), part
        ours = [n for n in families if not n.startswith("process_")]
        assert ours and all(n.startswith(f"{NAMESPACE}_") for n in ours), (part, ours)
        assert {"process_cpu_seconds", "process_resident_memory_bytes",
                "process_open_fds"} <= set(families), part
        series = [(s.name, tuple(sorted(s.labels.items())))
                  for f in registry.collect() for s in f.samples]
        assert len(series) == len(set(series)), part
    # the Kafka client is a label, never part of a name
    names = exported()
    assert not [n for n in names if "producer_kafka" in n or "backfill_kafka" in n]
    assert "client_id" in names[f"{NAMESPACE}_kafka_delivered_total"]


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
