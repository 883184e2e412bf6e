"""Running the backfill in tests: its API key, its config files and its CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from common.config import Config, ConsumerConfig, MarketStoreConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
KEY = "BFKEY" + uuid.uuid4().hex[:12]  # unique, so finding it in output means a leak


def write_config(tmp_path: Path, kafka_bootstrap: str, base_url: str,
                 **massive: Any) -> tuple[Config, Path]:
    tag = f"bf-{uuid.uuid4().hex[:10]}"
    raw = {
        "massive": {"api_key": KEY, "base_url": base_url, **massive},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 2,
                  "topics": {"bars": f"{tag}.bars", "trades": f"{tag}.trades",
                             "quotes": f"{tag}.quotes", "dead_letter": f"{tag}.dlq"}},
        "metrics": {"enabled": False},
        "services": {"state_dir": str(tmp_path / "state")},
        "producer": {"gaps_file": str(tmp_path / "gaps.jsonl")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, env={}), path


def cli_command() -> list[str]:
    """The installed console script (what users run), else the module."""
    script = Path(sys.executable).parent / "massive-fetcher"
    return [str(script)] if script.exists() else [sys.executable, "-m", "massive_fetcher"]


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), "backfill", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})




def full_config(tmp_path: Path, kafka_bootstrap: str, marketstore_url: str, sim_url: str,
                symbols: list[str], data_types: list[str]) -> tuple[Config, Path]:
    tag = f"bfms-{uuid.uuid4().hex[:10]}"
    raw = {
        "massive": {"api_key": KEY, "base_url": sim_url, "symbols": symbols,
                    "data_types": data_types,
                    "ws_server": sim_url.replace("http://", "ws://")},
        "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 2,
                  "topics": {"bars": f"{tag}.bars", "trades": f"{tag}.trades",
                             "quotes": f"{tag}.quotes", "dead_letter": f"{tag}.dlq"},
                  "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}},
        "marketstore": {"url": marketstore_url, "timeout_s": 10.0},
        "consumer": {"group_id": f"{tag}-group", "batch_max_ms": 100, "commit_delay_ms": 300,
                     "retry_initial_s": 0.2, "retry_max_s": 1.0},
        "producer": {"gaps_file": str(tmp_path / "gaps.jsonl"), "gap_repair": True,
                     "reconnect_initial_s": 0.1, "reconnect_max_s": 1.0},
        "metrics": {"enabled": False},
        "services": {"state_dir": str(tmp_path / "state")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, env={})
    assert isinstance(config.consumer, ConsumerConfig)
    assert isinstance(config.marketstore, MarketStoreConfig)
    return config, path


