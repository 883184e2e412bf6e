"""The producer's promise against the real servers: every event Massive sent while the
producer was subscribed, or while it was down, ends up in Kafka, and so in MarketStore;
what cannot be repaired is marked so in the gap log, never marked repaired.

Each test compares MarketStore with the simulator's model row by row over the whole time
it streamed, outages included (``assert_stored_equals_model``).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import generate_latest

from common.config import Config
from producer.cli import _attach_inprocess
from producer.gaps import read_gap_log
from producer.publisher import Publisher
from producer.watermark import read_watermark, watermark_path
from schemas.topics import ensure_topics
from services.native import NativeServices
from simulator.server import SimulatorServer
from tests.conftest import native_settings
from tests.support.backfillrun import full_config
from tests.support.liveproducer import InProcessProducer, cli_producer, stop_cleanly
from tests.support.testkit import consume_into_marketstore
from tests.support.truth import assert_stored_equals_model, missed_by_the_stream, streamed_window
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _symbols(prefix: str) -> list[str]:
    tag = uuid.uuid4().hex[:5].upper()
    return [f"{prefix}{tag}A", f"{prefix}{tag}B"]


def _repaired(path: Path, reason_prefix: str) -> bool:
    """Some gap whose reason starts with ``reason_prefix`` is recorded and every such
    gap is marked repaired."""
    gap_log = read_gap_log(path)
    mine = [g for g in gap_log.gaps if g.reason.startswith(reason_prefix)]
    return bool(mine) and all(g.id in gap_log.repaired for g in mine)


def wait_for_the_watermark_to_move(config: Config) -> None:
    """Until the producer saved a watermark past the one first seen: Kafka acknowledged
    records of every data type, so a restart or an outage starts from a known mark."""
    path = watermark_path(config.producer.gaps_file)
    wait_for(lambda: read_watermark(path) is not None, 60, "the run's first watermark")
    first = read_watermark(path)
    assert first is not None

    def moved() -> bool:
        mark = read_watermark(path)
        return mark is not None and all(mark.acked_ns[t] > at
                                        for t, at in first.acked_ns.items())

    wait_for(moved, 60, "the watermark to move past acknowledged records")


def into_marketstore(config: Config) -> None:
    """``consume_into_marketstore`` once the broker answers offset requests for the group.

    Right after a broker restart, and on a loaded machine for a new group, the broker
    answers NOT_COORDINATOR for a while: wait until it answers, and try a failed run
    again, which the exactly-once consumer makes harmless."""
    for attempt in range(3):
        wait_for_group_coordinator(config)
        try:
            consume_into_marketstore(config)
            return
        except KafkaException:
            if attempt == 2:
                raise


def wait_for_group_coordinator(config: Config, timeout_s: float = 90.0) -> None:
    """Until the broker answers offset requests for the consumer's group."""
    reader = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                       "group.id": config.consumer.group_id})
    try:
        wait_for(lambda: reader.committed([TopicPartition(config.kafka.topics.trades, 0)],
                                          timeout=5) is not None,
                 timeout_s, "the group coordinator", retry_on=(KafkaException,),
                 interval_s=0.5)
    finally:
        reader.close()


# -- 1. Kafka unreachable for longer than message.timeout.ms -------------------------

@pytest.fixture
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeServices]:
    """A Kafka of this test's own, which it may kill and start again."""
    state = Path(tempfile.mkdtemp(prefix="mf-kafka-outage-", dir=tmp_path_factory.getbasetemp()))
    handle = NativeServices(native_settings(state), die_with_parent=True)
    handle.up(["kafka"])
    try:
        yield handle
    finally:
        handle.down(["kafka"])


def test_kafka_outage_longer_than_message_timeout_is_repaired(
        private_kafka: NativeServices, marketstore_url: str, tmp_path: Path) -> None:
    symbols = _symbols("ZKO")
    with SimulatorServer(symbols=symbols, trades_per_second=20, quotes_per_second=20,
                         seed=21, tick_ms=20) as sim:
        config, _ = full_config(tmp_path, private_kafka.kafka_bootstrap, marketstore_url,
                                sim.url, symbols, ["trades", "quotes"])
        config = config.replace(kafka=dataclasses.replace(
            config.kafka, producer={"message.timeout.ms": 3000}))
        ensure_topics(config)
        side = Publisher(config, client_id="producer-backfill")
        with InProcessProducer(config) as prod:
            _attach_inprocess(prod.session, config, side)
            wait_for(lambda: prod.events() >= 200, timeout_s=60, what="the live stream")
            wait_for_the_watermark_to_move(config)
            private_kafka.kill("kafka")
            down_at = time.monotonic()
            # records queued now time out after 3 s and are dropped by librdkafka
            wait_for(lambda: prod.publisher.failed > 0, timeout_s=60,
                     what="records dropped by message.timeout.ms")
            time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))
            private_kafka.up(["kafka"])
            wait_for(lambda: _repaired(Path(config.producer.gaps_file),
                                         "Kafka did not acknowledge"),
                     timeout_s=180, what="the dropped records' gaps to be repaired")
            before = prod.events()
            wait_for(lambda: prod.events() >= before + 200, timeout_s=60,
                     what="live events after the outage")
            assert prod.stop() == 0
        assert side.close(30) == 0
        lo, hi = streamed_window(sim)
        assert len(sim.connections()) == 1  # the stream itself never stopped
        missed = {s: missed_by_the_stream(sim, s, lo, hi) for s in symbols}
    dropped = prod.publisher.failed
    assert dropped > 0, "nothing was dropped: the test proves nothing"
    gaps = [g for g in prod.session.gaps if g.reason.startswith("Kafka did not acknowledge")]
    assert {t for g in gaps for t in g.data_types} == {"trades", "quotes"}
    assert sum(int(g.reason.split()[4]) for g in gaps) == dropped
    assert missed == dict.fromkeys(symbols, 0)  # the stream sent everything: Kafka lost it
    into_marketstore(config)
    for symbol in symbols:
        assert_stored_equals_model(marketstore_url, sim.model, symbol, lo, hi)
    print(f"{dropped} records dropped in the outage, {len(gaps)} gaps, "
          f"{(hi - lo) / 1e9:.1f} s compared")


# -- 2./3. the producer's own downtime: kill -9, and a clean stop ----------------------

@pytest.mark.parametrize("how", ["kill -9", "clean stop"])
def test_downtime_between_two_runs_is_repaired(how: str, kafka_bootstrap: str,
                                               marketstore_url: str, tmp_path: Path) -> None:
    symbols = _symbols("ZKD" if how == "kill -9" else "ZCS")
    with SimulatorServer(symbols=symbols, trades_per_second=20, quotes_per_second=20,
                         seed=22, tick_ms=20) as sim:
        config, path = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                   symbols, ["trades", "quotes"])
        ensure_topics(config)
        gaps_file = Path(config.producer.gaps_file)

        def sent_trades() -> int:
            conns = sim.connections()
            return conns[-1]["counts"].get("T", 0) if conns else 0

        with cli_producer(path, tmp_path / "run1.log") as proc:
            wait_for(lambda: sent_trades() > 200, timeout_s=60, what="the first run")
            wait_for_the_watermark_to_move(config)
            if how == "kill -9":
                proc.kill()
                proc.wait(10)
            else:
                stop_cleanly(proc, tmp_path / "run1.log")
        time.sleep(6)  # the producer is down; the market is not
        reason = ("producer down: the previous run ended without a clean stop"
                  if how == "kill -9" else "producer down between a clean stop")
        with cli_producer(path, tmp_path / "run2.log") as proc:
            wait_for(lambda: len(sim.connections()) == 2 and sent_trades() > 100,
                     timeout_s=60, what="the second run")
            wait_for(lambda: _repaired(gaps_file, reason), timeout_s=120,
                     what="the downtime to be repaired")
            lines = stop_cleanly(proc, tmp_path / "run2.log")
        lo, hi = streamed_window(sim)
        missed = {s: missed_by_the_stream(sim, s, lo, hi) for s in symbols}
    downtime = [g for g in read_gap_log(gaps_file).gaps if g.reason.startswith(reason)]
    assert downtime and all(g.end_ns - g.start_ns >= 6e9 for g in downtime)
    assert all(v > 50 for v in missed.values()), f"the downtime missed too little: {missed}"
    assert any(x["msg"] == "gap repair recorded" for x in lines)
    into_marketstore(config)
    for symbol in symbols:
        assert_stored_equals_model(marketstore_url, sim.model, symbol, lo, hi)


def test_repair_downtime_false_leaves_a_clean_stop_alone(kafka_bootstrap: str,
                                                         marketstore_url: str,
                                                         tmp_path: Path) -> None:
    symbols = _symbols("ZRD")
    with SimulatorServer(symbols=symbols, trades_per_second=5, quotes_per_second=5,
                         seed=23, tick_ms=20) as sim:
        config, _ = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                symbols, ["trades"])
        config = config.replace(producer=dataclasses.replace(config.producer,
                                                             repair_downtime=False))
        ensure_topics(config)
        for _ in range(2):
            with InProcessProducer(config) as prod:
                wait_for(lambda: prod.events() >= 10, timeout_s=60, what="live events")
                assert prod.stop() == 0
    assert read_gap_log(config.producer.gaps_file).gaps == []


# -- 4. wildcard subscriptions ---------------------------------------------------------

def test_wildcard_gap_repairs_the_symbols_seen_and_says_what_it_cannot(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    symbols = _symbols("ZWC")
    with SimulatorServer(symbols=symbols, trades_per_second=20, quotes_per_second=20,
                         seed=24, tick_ms=20) as sim:
        config, _ = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                ["*"], ["trades", "quotes"])
        # An outage of at least 0.5 s (the first reconnect waits a random point in the upper
        # half of reconnect_initial_s): at 20 trades/s a symbol misses ~10 or more. The
        # tests' usual 0.1 s left one symbol missing none in a CI run.
        config = config.replace(producer=dataclasses.replace(
            config.producer, reconnect_initial_s=1.0, reconnect_max_s=2.0))
        ensure_topics(config)
        side = Publisher(config, client_id="producer-backfill")
        gaps_file = Path(config.producer.gaps_file)
        with InProcessProducer(config) as prod:
            _attach_inprocess(prod.session, config, side)
            wait_for(lambda: prod.events() >= 200, timeout_s=60, what="the live stream")
            time.sleep(0.3)  # trades in the window the disconnect opens
            assert sim.force_disconnect()
            wait_for(lambda: bool(read_gap_log(gaps_file).unrepairable), timeout_s=120,
                     what="the wildcard gap's repair")
            before = prod.events()
            wait_for(lambda: prod.events() >= before + 100, timeout_s=60,
                     what="events after the repair")
            metrics = generate_latest(prod.registry).decode()
            assert prod.stop() == 0
        assert side.close(30) == 0
        lo, hi = streamed_window(sim)
        missed = {s: missed_by_the_stream(sim, s, lo, hi) for s in symbols}
    assert all(v > 0 for v in missed.values()), f"the outage missed nothing: {missed}"
    gap_log = read_gap_log(gaps_file)
    (gap,) = gap_log.gaps
    assert gap.symbols == ("*",)
    assert gap.seen == {"trades": tuple(sorted(symbols)), "quotes": tuple(sorted(symbols))}
    assert gap.id not in gap_log.repaired and gap_log.pending == []
    marker = gap_log.unrepairable[gap.id]
    assert marker["repaired_symbols"] == {"trades": sorted(symbols),
                                          "quotes": sorted(symbols)}
    assert marker["records"] > 0
    assert marker["reason"].startswith("wildcard subscription *: repaired only for the "
                                       "symbols seen streaming before the gap")
    assert "massive_fetcher_producer_gaps_unrepairable_total 1.0" in metrics
    assert "massive_fetcher_producer_gaps_repaired_total 0.0" in metrics
    into_marketstore(config)
    for symbol in symbols:
        assert_stored_equals_model(marketstore_url, sim.model, symbol, lo, hi)


# -- 5. the watermark under a load that never lets the queue empty ----------------------

@pytest.mark.parametrize("max_age_s", [1.0, 3600.0])
def test_the_watermark_moves_under_a_load_that_never_empties_the_queue(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path, max_age_s: float) -> None:
    """Records linger a minute in librdkafka's queue while frames come every 20 ms, so
    the queue is never seen empty during the test: only the drain every
    ``watermark_max_age_s`` moves the watermark (with an hour, it stays where the run
    subscribed, and a crash would repair the whole run)."""
    symbols = _symbols("ZWM")
    with SimulatorServer(symbols=symbols, trades_per_second=50, quotes_per_second=0,
                         seed=25, tick_ms=20) as sim:
        config, _ = full_config(tmp_path, kafka_bootstrap, marketstore_url, sim.url,
                                symbols, ["trades"])
        config = config.replace(
            producer=dataclasses.replace(config.producer, watermark_max_age_s=max_age_s),
            kafka=dataclasses.replace(config.kafka,
                                      producer={**config.kafka.producer,
                                                "linger.ms": 60_000}))
        ensure_topics(config)
        path = watermark_path(config.producer.gaps_file)
        with InProcessProducer(config) as prod:
            wait_for(lambda: prod.events() >= 10 and path.exists(), timeout_s=60,
                     what="live events and the run's first watermark")
            first = read_watermark(path)
            assert first is not None
            time.sleep(5.0)
            assert prod.publisher.queue_depth > 0  # still lingering: never seen empty
            mark = read_watermark(path)
            assert mark is not None
            assert prod.stop() == 0
    moved_s = (mark.acked_ns["trades"] - first.acked_ns["trades"]) / 1e9
    if max_age_s < 5:
        assert moved_s > 2.0, moved_s
    else:
        assert moved_s == 0.0
