"""The producer in tests: in-process on a thread of its own, or the CLI as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from common.config import Config
from producer.publisher import Publisher
from producer.session import ProducerSession

ROOT = Path(__file__).resolve().parents[2]
KEY = "producer-test-key"


class InProcessProducer:
    """A ProducerSession on its own event loop thread, like the CLI runs it."""

    def __init__(self, config: Config, properties: dict[str, Any] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.publisher = Publisher(config, client_id="producer", registry=self.registry,
                                   properties=properties)
        self.session = ProducerSession(config, self.publisher, registry=self.registry)
        self.loop = asyncio.new_event_loop()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, name="test-producer", daemon=True)

    def _run(self) -> None:
        self.code = self.loop.run_until_complete(self.session.run())

    def __enter__(self) -> InProcessProducer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.session.request_stop)
            self.thread.join(30)
            assert not self.thread.is_alive(), "producer session did not stop"
            assert self.publisher.flush(30) == 0
        return self.code

    def events(self) -> int:
        return sum(self.session.events_by_kind.values())


def cli_env(kafka_bootstrap: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASSIVE_API_KEY", "MASSIVE_WS_SERVER", "KAFKA_BOOTSTRAP_SERVERS",
                        "MASSIVE_FETCHER_CONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    if kafka_bootstrap:
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    return env


@contextlib.contextmanager
def cli_producer(config_path: Path, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``massive-fetcher producer`` logging to ``log_path``; killed if the test leaves it
    running (an assertion failed before it was stopped)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "massive_fetcher", "producer", "--config",
             str(config_path)], env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop_cleanly(proc: subprocess.Popen[bytes], log_path: Path) -> list[dict[str, Any]]:
    """SIGTERM; the producer exits 0; its JSON log lines."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


