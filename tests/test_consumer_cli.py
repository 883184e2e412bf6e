"""``massive-fetcher consumer`` / ``replay`` as commands: metrics, health, SIGTERM, usage errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from tests.support.configfile import write_config_file
from tests.support.testkit import (
    create_topics,
    expected_buckets,
    make_config,
    publish,
    trades_stream,
    unique,
)
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


@pytest.mark.integration
def test_consumer_command_serves_metrics_and_commits_on_sigterm(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    sym = unique("CL")
    recs = [("trade", t) for t in trades_stream(sym, 120)]
    publish(config, recs)
    port = _free_port()
    k = config.kafka
    path = write_config_file(config, tmp_path / "c.yml",
                             consumer={"group_id": config.consumer.group_id,
                                       "commit_delay_ms": 300},
                             metrics={"consumer_port": port})
    env = {key: v for key, v in os.environ.items() if key != "MASSIVE_FETCHER_CONFIG"}
    proc = subprocess.Popen([sys.executable, "-m", "massive_fetcher", "consumer", "--config",
                             str(path)], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: 'massive_fetcher_consumer_events_written_total{type="trades"} 120.0'
                 in _scrape(port, "/metrics")[1], 60, what="metrics")
        status, text = _scrape(port, "/healthz")
        assert status == 200 and text.strip() == "ok"
        metrics = _scrape(port, "/metrics")[1]
        for name in ("massive_fetcher_consumer_batch_events_bucket",
                     "massive_fetcher_consumer_write_seconds_bucket",
                     "massive_fetcher_consumer_lag{",
                     "massive_fetcher_consumer_dead_letter_total"):
            assert name in metrics, name
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # every offset committed: a restart would start at the end
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": config.consumer.group_id})
    try:
        parts = [TopicPartition(k.topics.trades, p) for p in range(k.partitions)]
        committed = c.committed(parts, timeout=10)
        ends = [c.get_watermark_offsets(p, timeout=10)[1] for p in parts]
    finally:
        c.close()
    assert [p.offset if p.offset >= 0 else 0 for p in committed] == ends
    assert sum(ends) == 120
    assert len(expected_buckets(recs)) == 1


@pytest.mark.parametrize("argv,needle", [
    (["replay", "--types", "bars,ticks"], "--types"),
    (["replay", "--from-timestamp", "yesterday"], "--from-timestamp"),
    (["replay", "--symbols", "A:B"], "--symbols"),
    (["replay", "--target-marketstore", "db:5993"], "--target-marketstore"),
    (["replay", "--group-check-timeout", "0"], "--group-check-timeout"),
    (["replay", "--target-marketstore", "http://db:5993/rpc", "--group", "massive-fetcher"],
     "is the live group"),
])
def test_replay_usage_errors_are_one_line(argv: list[str], needle: str) -> None:
    done = subprocess.run([sys.executable, "-m", "massive_fetcher", *argv], cwd=ROOT,
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    err = done.stderr.decode().strip()
    assert needle in err and len(err.splitlines()) == 1


def test_replay_that_cannot_see_the_live_group_is_refused(tmp_path: Path) -> None:
    """No broker answers: whether the live group runs is unknown, so no replay (exit 3)."""
    path = tmp_path / "r.yml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": f"127.0.0.1:{_free_port()}"},
                                    "metrics": {"enabled": False}}))
    done = subprocess.run([sys.executable, "-m", "massive_fetcher", "replay", "--config",
                           str(path), "--group-check-timeout", "3"], cwd=ROOT,
                          capture_output=True, timeout=60)
    err = done.stderr.decode().strip()
    assert done.returncode == 3, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "cannot tell whether the live consumer group 'massive-fetcher' is running" in err
    assert "for 3s" in err
