"""SASL/SCRAM over TLS against a real broker: the producer, consumer, backfill and doctor
configured only through ``kafka.properties``; a wrong password is one line and an exit code.

The broker (tests/support/securekafka.py) gets a CA and a certificate made by openssl for
this module and a SCRAM-SHA-512 user; clients only ever see its SASL_SSL listener.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from common.config import Config, load_config
from common.files import write_private
from common.kafka import KAFKA_AUTH_EXIT_CODE
from common.logs import Redactor
from producer.mapping import record_from_ws_event
from simulator.server import SimulatorServer
from tests.support.cliproducer import stream_a_burst_through_the_cli_producer
from tests.support.configfile import write_config_file
from tests.support.securekafka import SecureKafka
from tests.support.testkit import (
    ThreadedConsumer,
    assert_buckets_equal,
    create_topics,
    expected_buckets,
    make_config,
    row_count,
    unique,
)
from tests.support.truth import ny_day, truth_trades
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
USER = "alice"
PASSWORD = "pw-" + secrets.token_urlsafe(16)  # unique: finding it in any output is a leak
WRONG = "wrong-" + secrets.token_urlsafe(8)


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    state = Path(tempfile.mkdtemp(prefix="mf-sasl-", dir=tmp_path_factory.getbasetemp()))
    with SecureKafka(state) as kafka:
        kafka.add_user(USER, PASSWORD)
        yield kafka


def secure_config(kafka: SecureKafka, marketstore_url: str, password: str = PASSWORD
                  ) -> Config:
    base = make_config(kafka.bootstrap, marketstore_url)
    return base.replace(kafka=dataclasses.replace(
        base.kafka, properties=kafka.client_properties(USER, password)))


def cli(*args: str, timeout: float = 180) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {key: v for key, v in os.environ.items()
           if key not in ("MASSIVE_API_KEY", "MASSIVE_FETCHER_CONFIG",
                          "KAFKA_BOOTSTRAP_SERVERS")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "massive_fetcher", *args], cwd=ROOT,
                          env={**env, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return done, time.monotonic() - started


def plain_lines(stderr: str) -> list[str]:
    """stderr without the JSON log lines: what a person reads."""
    return [line for line in stderr.splitlines() if line and not line.startswith("{")]


def test_stream_end_to_end_over_sasl_ssl(secure_kafka: SecureKafka, marketstore_url: str,
                                         tmp_path: Path) -> None:
    """simulator -> producer (CLI) -> SASL_SSL Kafka -> consumer -> MarketStore, plus a
    backfill (CLI) of another symbol and ``doctor``; MarketStore equals the ground truth."""
    config = secure_config(secure_kafka, marketstore_url)
    create_topics(config)
    live = [unique("SL")]
    history = unique("SH")
    with SimulatorServer(symbols=live, trades_per_second=30, quotes_per_second=30, seed=16,
                         tick_ms=20) as sim, \
            SimulatorServer(symbols=[history], trades_per_second=0.01,
                            quotes_per_second=0.01) as rest, \
            ThreadedConsumer(config) as running:
        stream_a_burst_through_the_cli_producer(config, sim, live, tmp_path,
                                                trades=100, timeout_s=90)
        path = write_config_file(config, tmp_path / "backfill.yml", services={
            "state_dir": str(tmp_path / "state")})
        backfill, _ = cli("backfill", "-apiKey", "sasl-test-key", "-baseURL", rest.url,
                          "-trades", "-from", "trades=2024-01-02", "-to", "2024-01-02",
                          "-symbols", history, "-config", str(path))
        assert backfill.returncode == 0, backfill.stderr[-2000:]
        truth = truth_trades(rest.url, "trade", history, ny_day("2024-01-02"),
                             ny_day("2024-01-03"))
        sent = [record_from_ws_event(ev, None) for ev in sim.sent_events()]
        expected = expected_buckets([*sent, *(("trade", r) for r in truth)])
        assert {t.split("/")[0] for t in expected} == {live[0], history}
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 90, what="rows")
        assert running.service.dead_letters == 0
    assert_buckets_equal(marketstore_url, expected)
    assert len(truth) > 500 and sum(len(e) for e in expected.values()) > 2000

    doctor, _ = cli("doctor", "--config", str(path), "--timeout", "20")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"ok    kafka: 1 broker(s) at {secure_kafka.bootstrap}" in doctor.stdout
    outputs = [backfill.stdout, backfill.stderr, doctor.stdout, doctor.stderr,
               (tmp_path / "producer.log").read_text()]
    assert not any(PASSWORD in text for text in outputs)
    for private in (path, tmp_path / "producer.yml"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


@pytest.mark.parametrize("command", ["producer", "consumer", "backfill", "topics", "doctor"])
def test_a_wrong_password_is_one_line_and_an_exit_code(secure_kafka: SecureKafka,
                                                       marketstore_url: str, tmp_path: Path,
                                                       command: str) -> None:
    config = secure_config(secure_kafka, marketstore_url, password=WRONG)
    # a wait far longer than the test allows: an exit in time is the refusal, not a timeout
    path = write_config_file(
        config, tmp_path / "wrong.yml",
        massive={"api_key": "sasl-test-key", "ws_server": "ws://127.0.0.1:9",
                 "base_url": "http://127.0.0.1:9", "symbols": ["AAPL"],
                 "data_types": ["trades"]},
        producer={"kafka_wait_s": 600.0, "gaps_file": str(tmp_path / "gaps.jsonl"),
                  "gap_repair": False},
        services={"state_dir": str(tmp_path / "state")})
    args = {"producer": ["producer", "--config", str(path)],
            "consumer": ["consumer", "--config", str(path)],
            "backfill": ["backfill", "-trades", "-from", "trades=2024-01-02", "-to",
                         "2024-01-02", "-symbols", "AAPL", "-config", str(path)],
            "topics": ["topics", "describe", "--config", str(path), "--timeout", "600"],
            "doctor": ["doctor", "--config", str(path), "--timeout", "600"]}[command]
    done, seconds = cli(*args, timeout=240)
    text = done.stdout + done.stderr
    assert WRONG not in text
    if command == "doctor":
        assert done.returncode == 1, text
        line = next(x for x in done.stdout.splitlines() if x.startswith("FAIL  kafka:"))
    else:
        assert done.returncode == KAFKA_AUTH_EXIT_CODE, text[-3000:]
        lines = plain_lines(done.stderr)
        assert len(lines) == 1, lines
        line = lines[0]
        assert line.startswith(f"massive-fetcher {command}: error: Kafka at "
                               f"{secure_kafka.bootstrap} refused the client"), line
    assert "Authentication failed" in line and "sasl.password" in line, line
    assert "Traceback" not in text
    assert seconds < 120, f"{command} took {seconds:.0f}s to give up"
    print(f"{command}: refused, exit {done.returncode} after {seconds:.1f}s (process start "
          "included)")


def test_secret_kafka_properties_never_reach_a_log_line(tmp_path: Path) -> None:
    path = write_private(tmp_path / "c.yml", yaml.safe_dump({"kafka": {
        "properties": {"sasl.username": USER, "sasl.password": PASSWORD,
                       "security.protocol": "SASL_SSL"},
        "producer": {"ssl.key.password": "key-" + PASSWORD}}}))
    config = load_config(path, env={})
    assert PASSWORD not in repr(config) and USER in repr(config)
    assert set(config.secrets()) == {PASSWORD, "key-" + PASSWORD}
    line = Redactor(config.secrets())(f'{{"msg": "login {PASSWORD} key-{PASSWORD}"}}')
    assert PASSWORD not in line and "***" in line
