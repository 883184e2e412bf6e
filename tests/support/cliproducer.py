"""The CLI producer streaming a simulator into a test's topics, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.config import Config
from simulator.server import SimulatorServer
from tests.support.configfile import write_config_file
from tests.support.readback import read_to_end
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
MINUTE_NS = 60_000_000_000


def stream_a_burst_through_the_cli_producer(config: Config, sim: SimulatorServer,
                                            symbols: list[str], tmp_path: Path, *,
                                            trades: int, timeout_s: float) -> None:
    """``massive-fetcher producer`` on ``sim`` for ``symbols`` (bars, trades, quotes) into
    ``config``'s topics: once the simulator sent more than ``trades`` trades on one
    connection, a burst of 2000 events and the last whole minute's AM bars, then SIGTERM;
    the producer must exit 0 (killed if an assertion leaves it running)."""
    k = config.kafka
    path = write_config_file(
        config, tmp_path / "producer.yml",
        massive={"api_key": "e2e-key", "ws_server": f"ws://127.0.0.1:{sim.port}",
                 "symbols": symbols, "data_types": ["bars", "trades", "quotes"]},
        producer={"gaps_file": str(tmp_path / "gaps.jsonl"), "gap_repair": False},
        metrics={"producer_port": 0})
    env = {key: v for key, v in os.environ.items()
           if key not in ("MASSIVE_API_KEY", "MASSIVE_WS_SERVER", "MASSIVE_FETCHER_CONFIG")}
    log_path = tmp_path / "producer.log"
    with log_path.open("wb") as log:
        producer = subprocess.Popen(
            [sys.executable, "-m", "massive_fetcher", "producer", "--config", str(path)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(c["counts"].get("T", 0) > trades for c in sim.connections()),
                 timeout_s, what="streaming")
        sim.burst(2000)
        minute = (time.time_ns() // MINUTE_NS - 1) * MINUTE_NS
        assert sim.send_minute(minute) >= 1  # frames with the last whole minute's AM bars
        bars = len(sim.sent_events(ev="AM"))
        wait_for(lambda: len(read_to_end(config, [k.topics.bars])) >= bars,
                 timeout_s, what="the AM bars in Kafka")
        producer.send_signal(signal.SIGTERM)
        assert producer.wait(60) == 0, log_path.read_text()[-2000:]
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(10)
