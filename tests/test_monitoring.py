"""The `monitoring` profile: Prometheus scrapes every part, Grafana gets the data source and
the dashboard. No Docker engine here, so the files are checked by the real ``promtool``
(from Debian's ``prometheus`` package) and against compose.yaml and the parts' own ports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from common.config import Config
from tests.support.partmetrics import registries
from tests.support.promtool import promtool

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
PROMETHEUS = MONITORING / "prometheus.yml"
PROVISIONING = MONITORING / "grafana" / "provisioning"
DASHBOARD = ROOT / "dashboards" / "massive-fetcher.grafana.json"
# scrape job -> (compose service, the port its /metrics is on)
PARTS = {
    "producer": ("producer", Config().metrics.producer_port),
    "consumer": ("consumer", Config().metrics.consumer_port),
    "backfill": ("backfill", Config().metrics.backfill_port),
    "simulator": ("simulator", Config().simulator.port),
    "marketstore": ("marketstore", 5993),
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


@pytest.fixture(scope="module")
def tool() -> Path:
    found = promtool()
    if found is None:
        pytest.skip("no promtool: not on PATH and `apt-get download prometheus` failed")
    return found


def _targets(job: dict[str, Any]) -> list[str]:
    static = [t for c in job.get("static_configs", []) for t in c["targets"]]
    dns = [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
    return static + dns


def test_promtool_accepts_the_prometheus_config(tool: Path) -> None:
    out = subprocess.run([str(tool), "check", "config", str(PROMETHEUS)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("part", ["producer", "consumer", "backfill"])
def test_promtool_accepts_each_parts_metrics(tool: Path, part: str) -> None:
    """Naming rules (counters end in _total, units, no reserved suffixes) on the real output."""
    exposition = generate_latest(registries()[part])
    out = subprocess.run([str(tool), "check", "metrics"], input=exposition,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()


def test_prometheus_scrapes_every_part_on_its_port(services: dict[str, Any]) -> None:
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    for job, (service, port) in PARTS.items():
        assert service in services, service
        assert _targets(jobs[job]) == [f"{service}:{port}"], job
    # a scaled consumer is one instance per replica, not one name behind Docker's DNS
    assert jobs["consumer"]["dns_sd_configs"][0]["type"] == "A"


def test_the_monitoring_profile_mounts_these_files(services: dict[str, Any]) -> None:
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in \
        prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_in_grafana = mounts["./dashboards/massive-fetcher.grafana.json"]
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "massive-fetcher.yaml")
                              .read_text())["providers"][0]
    assert Path(dashboard_in_grafana).parent == Path(provider["options"]["path"])
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == dashboard_in_grafana
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_grafana_gets_the_compose_prometheus_as_its_default_source() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml")
                             .read_text())["datasources"]
    assert len(sources) == 1
    source = sources[0]
    assert (source["type"], source["url"], source["isDefault"]) == \
        ("prometheus", "http://prometheus:9090", True)
    board = json.loads(DASHBOARD.read_text())
    variable = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
    assert variable["query"] == source["type"]  # the variable lists it, and picks the default
