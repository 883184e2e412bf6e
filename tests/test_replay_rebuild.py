"""Issue 6A: replay rebuilds MarketStore from the topics (fresh group), bucket for bucket."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from common.config import Config
from consumer.testkit import (
    BASE_NS,
    ThreadedConsumer,
    assert_buckets_equal,
    bar,
    comparable,
    create_topics,
    expected_buckets,
    make_config,
    publish,
    quotes_stream,
    read_bucket,
    row_count,
    trades_stream,
    unique,
    wait_for,
)
from services.base import ServiceError
from services.native import NativeServices

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def empty_marketstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Database B: a private MarketStore of our own (stopped by pid afterwards)."""
    from tests.conftest import native_settings

    state = Path(tempfile.mkdtemp(prefix="mf-replay-", dir=tmp_path_factory.getbasetemp()))
    handle = NativeServices(native_settings(state), die_with_parent=True)
    try:
        handle.check_tools(["marketstore"])
        handle.up(["marketstore"])
    except ServiceError as exc:
        pytest.skip(f"needs a second MarketStore: {exc}")
    try:
        yield handle.marketstore_url
    finally:
        handle.down()


def _replay(config: Config, url: str, tmp: Path, *extra: str) -> None:
    path = tmp / f"replay-{unique()}.yml"
    k = config.kafka
    path.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": k.bootstrap_servers, "partitions": k.partitions,
                  "topics": {"bars": k.topics.bars, "trades": k.topics.trades,
                             "quotes": k.topics.quotes, "dead_letter": k.topics.dead_letter}},
        "marketstore": {"url": url},
        "consumer": {"group_id": config.consumer.group_id, "commit_delay_ms": 200,
                     "batch_max_ms": 100},
        "metrics": {"enabled": False},
    }))
    env = {k: v for k, v in os.environ.items() if k != "MARKETSTORE_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "massive_fetcher", "replay", "--config", str(path),
         "--until-caught-up", *extra], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def _snapshot(url: str, tbks: list[str]) -> dict[str, np.ndarray]:
    return {t: comparable(t, read_bucket(url, t)) for t in tbks}


def test_replay_rebuilds_an_empty_database_and_changes_nothing_in_a_full_one(
        kafka_bootstrap: str, marketstore_url: str, empty_marketstore: str,
        tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    a, b = unique("RA"), unique("RB")
    first: list[tuple[str, dict]] = []
    for s in (a, b):
        first += [("trade", t) for t in trades_stream(s, 400)]
        first += [("quote", q) for q in quotes_stream(s, 300)]
        first += [("bar", bar(s, BASE_NS + i * 60 * 10**9)) for i in range(10)]
    publish(config, first)
    time.sleep(1.5)  # Kafka timestamps are in ms: leave a clear gap for --from-timestamp
    cut = time.time()
    time.sleep(1.5)
    second = [("trade", t) for t in trades_stream(a, 200, BASE_NS + 3600 * 10**9,
                                                   first_seq=401)]
    publish(config, second)
    everything = first + second
    expected = expected_buckets(everything)

    # database A: the live consumer
    with ThreadedConsumer(config):
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 60, what="database A")
    assert_buckets_equal(marketstore_url, expected)
    tbks = sorted(expected)
    before = _snapshot(marketstore_url, tbks)

    # B, filtered: only trades of `a` from the cut on
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut % 1 * 1000):03d}Z"
    _replay(config, empty_marketstore, tmp_path, "--types", "trades", "--symbols", a,
            "--from-timestamp", iso)
    assert_buckets_equal(empty_marketstore, expected_buckets(second))
    assert read_bucket(empty_marketstore, f"{b}/1Sec/TRADE") is None
    assert read_bucket(empty_marketstore, f"{a}/1Min/QUOTE") is None

    # B, everything (on top of the filtered part): equal to A bucket for bucket, row for row
    _replay(config, empty_marketstore, tmp_path)
    after_b = _snapshot(empty_marketstore, tbks)
    for t in tbks:  # bitwise: NaN (absent) columns compare equal too
        assert after_b[t].tobytes() == before[t].tobytes(), t

    # replay into the populated database A: nothing changes
    _replay(config, marketstore_url, tmp_path)
    after_a = _snapshot(marketstore_url, tbks)
    for t in tbks:
        assert after_a[t].tobytes() == before[t].tobytes(), t
