"""The main job (`massive-fetcher run`) as a newcomer meets it: with no API key it streams
from the bundled simulator, and data lands in MarketStore within a minute."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pymarketstore as pymkts
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_streams_simulator_data_into_marketstore(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    symbols = [f"ZR{tag}A", f"ZR{tag}B"]
    config = {
        "massive": {"symbols": symbols, "data_types": ["bars", "trades", "quotes"]},
        "kafka": {"topics": {k: f"main-job-{tag}.{k}" for k in
                             ("bars", "trades", "quotes", "dead_letter")},
                  "partitions": 2},
        "consumer": {"group_id": f"main-job-{tag}"},
        "simulator": {"port": free_port(), "symbols": symbols,
                      "trades_per_second": 20.0, "quotes_per_second": 20.0},
        "services": {"state_dir": str(tmp_path / "state")},
        "metrics": {"producer_port": free_port(), "consumer_port": free_port(),
                    "backfill_port": free_port()},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "MASSIVE_API_KEY"}
    env.update(KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, MARKETSTORE_URL=marketstore_url,
               COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "massive_fetcher", "run", "--config", str(path),
         "--duration", "15"],
        capture_output=True, text=True, timeout=180, env=env, cwd=ROOT,
        preexec_fn=lambda: os.umask(0))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the children's config (it holds the API key when one is set) is private, umask or not
    assert (tmp_path / "state" / "run" / "config.yaml").stat().st_mode & 0o777 == 0o600
    assert "streaming from the bundled Massive simulator" in proc.stdout
    assert "MarketStore buckets" in proc.stdout
    for symbol in symbols:
        assert f"{symbol}/1Sec/TRADE" in proc.stdout
        assert f"{symbol}/1Min/QUOTE" in proc.stdout

    client = pymkts.Client(marketstore_url)
    for symbol in symbols:
        for timeframe, group in (("1Sec", "TRADE"), ("1Min", "QUOTE")):
            reply = client.query(pymkts.Params(symbol, timeframe, group))
            rows = next(iter(reply.all().values())).array
            # 15 s at 20 events/s per type and symbol: well over 100 rows each.
            assert len(rows) > 100, (symbol, group, len(rows))
    # every child was stopped: nothing listens on their ports any more (SO_REUSEADDR lets
    # the bind pass over TIME_WAIT connections, not over a live listener)
    for port in (config["metrics"]["producer_port"], config["metrics"]["consumer_port"],
                 config["simulator"]["port"]):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


def test_runner_choice_prefers_native_and_falls_back_to_compose() -> None:
    from massive_fetcher.pipeline import choose_runner

    assert choose_runner("auto", java_on_path=True, docker_reachable=True) == "native"
    assert choose_runner("auto", java_on_path=False, docker_reachable=True) == "compose"
    assert choose_runner("auto", java_on_path=False, docker_reachable=False) == "native"
    assert choose_runner("compose", java_on_path=True, docker_reachable=False) == "compose"


def test_the_childrens_config_holding_the_key_is_private_even_with_umask_0(
        tmp_path: Path) -> None:
    from common.config import load_config
    from massive_fetcher.pipeline import effective_config

    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"massive": {"api_key": "SEKRIT-KEY-0600"}}))
    config = load_config(user, env={})
    stale = tmp_path / "config.yaml"
    stale.write_text("left by an older version\n")
    stale.chmod(0o644)
    previous = os.umask(0)
    try:
        path = effective_config(config, str(user), use_simulator=False, directory=tmp_path)
    finally:
        os.umask(previous)
    assert path == stale
    assert path.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(path.read_text())["massive"]["api_key"] == "SEKRIT-KEY-0600"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "user.yaml"]
