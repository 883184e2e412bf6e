"""Issue 6A: replay rebuilds MarketStore from the topics (fresh group), bucket for bucket.
Issue 12B: it never writes beside the live group on the live group's MarketStore."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.config import Config
from consumer.replayguard import REFUSED_EXIT_CODE, live_members
from schemas.codec import make_codec
from services.base import ServiceError
from services.native import NativeServices
from tests.support.configfile import write_config_file
from tests.support.readback import read_to_end
from tests.support.testkit import (
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
)
from tests.support.wait import wait_for

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
    done = _run_replay(config, url, tmp, *extra)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def _run_replay(config: Config, url: str, tmp: Path,
                *extra: str) -> subprocess.CompletedProcess[bytes]:
    """``massive-fetcher replay --until-caught-up`` with ``url`` as marketstore.url."""
    path = write_config_file(config, tmp / f"replay-{unique()}.yml",
                             marketstore={"url": url},
                             consumer={"group_id": config.consumer.group_id,
                                       "commit_delay_ms": 200, "batch_max_ms": 100})
    env = {k: v for k, v in os.environ.items() if k != "MARKETSTORE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "massive_fetcher", "replay", "--config", str(path),
         "--until-caught-up", *extra], cwd=ROOT, env=env, capture_output=True, timeout=120)


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


def _records(symbol: str) -> list[tuple[str, dict]]:
    records = [("trade", t) for t in trades_stream(symbol, 500)]
    records += [("quote", q) for q in quotes_stream(symbol, 300)]
    return records + [("bar", bar(symbol, BASE_NS + i * 60 * 10**9)) for i in range(10)]


def test_replay_beside_the_live_group_is_refused_and_writes_nothing(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    records = _records(unique("RG"))
    publish(config, records)
    expected = expected_buckets(records)
    group = config.consumer.group_id
    with ThreadedConsumer(config):
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 60, what="the live consumer")
        wait_for(lambda: live_members(config, group, 5) == 1, 30, what="a live member")
        for extra in ((), ("--group", group)):  # a fresh group, or the live group itself
            done = _run_replay(config, marketstore_url, tmp_path, *extra)
            err = done.stderr.decode()
            assert done.returncode == REFUSED_EXIT_CODE, err[-2000:]
            assert err.count("\n") == 1 and "Traceback" not in err
            assert f"the live consumer group '{group}' has 1 member(s)" in err
            assert "--target-marketstore" in err
        # the live MarketStore given as the target is refused too, before Kafka is asked
        done = _run_replay(config, marketstore_url, tmp_path,
                           "--target-marketstore", marketstore_url + "/")
        assert done.returncode == REFUSED_EXIT_CODE
        assert "is the MarketStore the live consumer group" in done.stderr.decode()
        bad = _run_replay(config, marketstore_url, tmp_path, "--target-marketstore", "db:5993")
        assert bad.returncode == 2 and b"not an http(s):// URL" in bad.stderr
        # nothing was written twice while the live group kept running
        assert_buckets_equal(marketstore_url, expected)
    assert_buckets_equal(marketstore_url, expected)


def test_replay_into_another_marketstore_while_the_live_group_runs(
        kafka_bootstrap: str, marketstore_url: str, empty_marketstore: str,
        tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    records = _records(unique("RT"))
    publish(config, records)
    expected = expected_buckets(records)
    tbks = sorted(expected)
    with ThreadedConsumer(config):
        wait_for(lambda: all(row_count(marketstore_url, t) >= len(e)
                             for t, e in expected.items()), 60, what="the live consumer")
        wait_for(lambda: live_members(config, config.consumer.group_id, 5) == 1, 30,
                 what="a live member")
        # marketstore.url stays the live one; the flag aims the rebuild elsewhere
        _replay(config, marketstore_url, tmp_path, "--target-marketstore", empty_marketstore)
        assert_buckets_equal(empty_marketstore, expected)
        assert_buckets_equal(marketstore_url, expected)  # no duplicates in the live one
        live, rebuilt = _snapshot(marketstore_url, tbks), _snapshot(empty_marketstore, tbks)
    for t in tbks:  # bitwise: NaN (absent) columns compare equal too
        assert rebuilt[t].tobytes() == live[t].tobytes(), t
    assert_buckets_equal(marketstore_url, expected)


def test_replay_is_exact_for_a_bucket_under_its_old_and_new_keys(
        kafka_bootstrap: str, marketstore_url: str, empty_marketstore: str,
        tmp_path: Path) -> None:
    """Records a producer keyed by the raw ``X/A`` before keys were normalised sit on
    another partition than the same bucket's records keyed ``X.A``; a replay reads both
    with one consumer, so the bucket still has one writer and every event lands once."""
    config = make_config(kafka_bootstrap, marketstore_url, partitions=8)
    create_topics(config)
    # librdkafka's default partitioner is CRC32 of the key: pick a ticker whose two keys
    # differ (checked on the messages below)
    base = next(b for b in (unique("RK") for _ in range(50))
                if zlib.crc32(f"{b}/A".encode()) % 8 != zlib.crc32(f"{b}.A".encode()) % 8)
    trades = trades_stream(f"{base}/A", 500)
    codec = make_codec(config)
    topic = config.kafka.topics.trades
    old = [(topic, f"{base}/A".encode(), codec.encode("trade", t)) for t in trades[:300]]
    new = [(topic, f"{base}.A".encode(), codec.encode("trade", t)) for t in trades[200:]]
    publish(config, [], raw=old + new)  # 100 events under both keys, as an overlap would
    _replay(config, empty_marketstore, tmp_path, "--types", "trades")
    expected = expected_buckets([("trade", t) for t in trades])
    tbk = f"{base}.A/1Sec/TRADE"
    assert list(expected) == [tbk] and len(expected[tbk]) == 500
    assert_buckets_equal(empty_marketstore, expected)

    partitions = _partitions_by_key(config, topic)
    assert set(partitions) == {f"{base}/A".encode(), f"{base}.A".encode()}
    assert len(set(partitions.values())) == 2, partitions


def _partitions_by_key(config: Config, topic: str) -> dict[bytes, int]:
    return {msg.key(): msg.partition()
            for msg in read_to_end(config, [topic])}
