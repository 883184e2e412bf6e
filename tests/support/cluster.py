"""Streaming through a real three-node cluster while its brokers fail, for the fault tests.

``ClusterRun`` runs the simulator, the in-process producer and a consumer-group member on
the session's cluster; a test breaks brokers in between, then ``finish`` checks that
MarketStore equals the simulator's model row by row and that Kafka holds each produced
record once, or twice only where librdkafka bumped the idempotent producer's epoch.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common.config import Config
from common.kafka import silent_logger
from producer.publisher import producer_properties
from schemas.replication import replication_problems
from schemas.topics import describe_topics, ensure_topics, wanted_configs, wanted_replication
from services.native import NativeServices
from simulator.server import SimulatorServer
from tests.support.backfillrun import full_config
from tests.support.kafkacopies import repeated_values
from tests.support.liveproducer import InProcessProducer
from tests.support.testkit import ThreadedConsumer, read_bucket
from tests.support.truth import assert_stored_equals_model, missed_by_the_stream, streamed_window
from tests.support.wait import wait_for

PARTITIONS = 6  # two leaders per broker on each topic


def partition_leaders(config: Config) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the broker id leading it, for the trades and quotes topics."""
    topics = (config.kafka.topics.trades, config.kafka.topics.quotes)
    return {(info.name, p.partition): p.leader
            for info in describe_topics(config) if info.name in topics
            for p in info.replicas}


def records_per_partition(config: Config) -> dict[tuple[str, int], int]:
    """(topic, partition) -> how many records Kafka holds (high minus low watermark)."""
    reader = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers,
                       "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        counts = {}
        for topic, partition in partition_leaders(config):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition),
                                                     timeout=10)
            counts[(topic, partition)] = high - low
        return counts
    finally:
        reader.close()


def busiest_leader(config: Config) -> int:
    """The broker that leads the partitions holding the most records."""
    leaders = partition_leaders(config)
    by_broker: dict[int, int] = {}
    for key, count in records_per_partition(config).items():
        by_broker[leaders[key]] = by_broker.get(leaders[key], 0) + count
    return max(by_broker, key=lambda broker: by_broker[broker])


def fully_in_sync(config: Config) -> bool:
    """Every partition of the test's topics has a leader and all replicas in sync."""
    try:
        infos = describe_topics(config, timeout_s=5)
    except Exception:  # a broker restarting: not in sync yet
        return False
    return all(info.exists and not replication_problems(info.replicas, 2) for info in infos)


def wait_in_sync(config: Config, timeout_s: float = 180.0) -> None:
    wait_for(lambda: fully_in_sync(config), timeout_s=timeout_s,
             what="every replica back in sync")


class AckProbe:
    """One record to every partition of a topic of its own every 20 ms, with the producer's
    settings (``acks=all``, idempotence): when each was sent and acknowledged."""

    INTERVAL_S = 0.02

    def __init__(self, config: Config) -> None:
        self.topic = f"{config.kafka.topics.trades}.probe"
        admin = AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers})
        brokers = len(admin.list_topics(timeout=30).brokers)
        replication = wanted_replication(config, brokers)
        admin.create_topics([NewTopic(self.topic, num_partitions=PARTITIONS,
                                      replication_factor=replication,
                                      config=wanted_configs(config, replication))]
                            )[self.topic].result(30)
        props = producer_properties(config, "ack-probe")
        props["delivery.report.only.error"] = False
        props["logger"] = silent_logger("tests.ack_probe")  # the fault's refused connections
        self._producer = Producer(props)
        self.sent: list[tuple[int, float, float | None]] = []  # partition, sent, acked
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ack-probe", daemon=True)

    def start(self) -> AckProbe:
        self._thread.start()
        wait_for(lambda: self.all_acked_since(time.monotonic() - 0.5), timeout_s=180,
                 what="the probe's first acknowledgements")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._producer.flush(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for partition in range(PARTITIONS):
                with self._lock:
                    index = len(self.sent)
                    self.sent.append((partition, time.monotonic(), None))
                self._producer.produce(self.topic, b"", partition=partition,
                                       on_delivery=self._acked(index))
            self._producer.poll(self.INTERVAL_S)

    def _acked(self, index: int) -> Callable[[Any, Any], None]:
        def done(err: Any, _msg: Any) -> None:
            if err is None:
                with self._lock:
                    partition, sent, _ = self.sent[index]
                    self.sent[index] = (partition, sent, time.monotonic())
        return done

    def all_acked_since(self, since: float) -> bool:
        """Every partition acknowledged a probe sent after ``since``, and every probe
        sent before that one is acknowledged too."""
        with self._lock:
            later = {p for p, sent, acked in self.sent if sent > since and acked}
            return len(later) == PARTITIONS and all(
                acked is not None for _, sent, acked in self.sent if sent <= since)

    def worst_wait_since(self, since: float) -> float:
        """The longest a probe sent after ``since`` (or still waiting then) waited."""
        now = time.monotonic()
        with self._lock:
            return max(((acked or now) - max(sent, since)
                        for _, sent, acked in self.sent if (acked or now) >= since),
                       default=0.0)


class EpochWatch:
    """The idempotent producer's (producer id, epoch) pairs, from librdkafka's statistics.

    librdkafka bumps the epoch of an idempotent producer when a broker answers
    OUT_OF_ORDER_SEQUENCE_NUMBER for a request behind a failed one, which a leader change
    can cause (also on UNKNOWN_PRODUCER_ID and message timeouts). Every partition then
    starts its sequence numbers again, so a batch whose first send was written but not
    answered (the connection to the old leader closed) is sent again under the new epoch
    and the broker cannot recognise it: Kafka holds it twice
    (https://github.com/confluentinc/librdkafka/issues/4953, open).
    """

    INTERVAL_MS = 500

    def __init__(self) -> None:
        self.pids: list[tuple[int, int]] = []

    def properties(self) -> dict[str, Any]:
        return {"statistics.interval.ms": self.INTERVAL_MS, "stats_cb": self._stats}

    def _stats(self, text: str) -> None:
        eos = json.loads(text).get("eos") or {}
        pid = (int(eos.get("producer_id", -1)), int(eos.get("producer_epoch", -1)))
        if pid[0] >= 0 and (not self.pids or self.pids[-1] != pid):
            self.pids.append(pid)

    @property
    def bumps(self) -> int:
        """How often the producer id or epoch changed after the first one."""
        return max(0, len(self.pids) - 1)


@dataclasses.dataclass
class ClusterRun:
    cluster: NativeServices
    tmp_path: Path
    prefix: str
    seed: int
    rate: float = 20.0  # trades and quotes per second and symbol

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:5].upper()
        self.symbols = [f"{self.prefix}{tag}A", f"{self.prefix}{tag}B", f"{self.prefix}{tag}C"]
        self.recoveries: list[float] = []

    def __enter__(self) -> ClusterRun:
        self.sim = SimulatorServer(symbols=self.symbols, trades_per_second=self.rate,
                                   quotes_per_second=self.rate, seed=self.seed, tick_ms=20)
        self.sim.__enter__()
        config, _ = full_config(self.tmp_path, self.cluster.kafka_bootstrap,
                                self.cluster.marketstore_url, self.sim.url, self.symbols,
                                ["trades", "quotes"])
        self.config = config.replace(kafka=dataclasses.replace(config.kafka,
                                                               partitions=PARTITIONS))
        ensure_topics(self.config)
        self.consumer = ThreadedConsumer(self.config).start()
        self.probe = AckProbe(self.config).start()
        self.epochs = EpochWatch()
        self.producer = InProcessProducer(self.config, self.epochs.properties()).__enter__()
        self.wait_events(200, "the live stream")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.probe.stop()
            self.producer.stop()
            self.consumer.stop()
        finally:
            self.sim.__exit__(None, None, None)

    @property
    def publisher(self) -> Any:
        return self.producer.publisher

    def wait_events(self, more: int, what: str, timeout_s: float = 120.0) -> None:
        """Until the producer has read ``more`` further events from the stream."""
        target = self.producer.events() + more
        wait_for(lambda: self.producer.events() >= target, timeout_s=timeout_s, what=what)

    def time_until_flow_resumes(self, fault: Callable[[], object],
                                timeout_s: float = 180.0) -> float:
        """How long Kafka stopped acknowledging: the longest a probe record sent from the
        start of ``fault`` waited for its acknowledgement, on any partition. The fault
        runs on a thread of its own (a controlled shutdown takes seconds, and the flow may
        resume before it ends)."""
        began = time.monotonic()
        failing = threading.Thread(target=fault, name="fault", daemon=True)
        failing.start()
        failing.join(timeout_s)
        assert not failing.is_alive(), "the fault did not finish"
        ended = time.monotonic()
        wait_for(lambda: self.probe.all_acked_since(ended), timeout_s=timeout_s,
                 what="every partition to acknowledge again after the fault")
        seconds = self.probe.worst_wait_since(began)
        self.recoveries.append(seconds)
        return seconds

    def assert_alive(self) -> None:
        assert self.producer.thread.is_alive(), f"the producer exited ({self.producer.code})"
        assert self.consumer.thread.is_alive(), f"the consumer stopped: {self.consumer.error}"

    def assert_kafka_holds_each_record_once(self) -> None:
        """Kafka holds every produced record, and a second copy of one only after an epoch
        bump (see :class:`EpochWatch`); the consumer drops such copies, which the
        comparison with the model in :meth:`finish` proves."""
        stored = sum(records_per_partition(self.config).values())
        copies = repeated_values(self.config, sorted(partition_leaders(self.config)))
        extra = sum(len(offsets) - 1 for found in copies.values() for offsets in found)
        print(f"\nKafka holds {stored} records for {self.publisher.produced} produced; "
              f"{extra} second copies {dict(copies)}; producer id/epoch "
              f"{self.epochs.pids}")
        assert stored - extra == self.publisher.produced, \
            "Kafka does not hold every produced record (lost, or records of another writer)"
        assert not copies or self.epochs.bumps, \
            "Kafka holds records twice without an epoch bump: a cause not yet understood"

    def finish(self) -> None:
        """Stop the producer cleanly, let the consumer land everything, compare."""
        self.wait_events(200, "live events after the faults")
        self.assert_alive()
        assert self.producer.stop() == 0
        assert self.publisher.failed == 0, "Kafka refused records for good"
        lo, hi = streamed_window(self.sim)
        assert len(self.sim.connections()) == 1, "the stream was cut: not a broker fault"
        assert {s: missed_by_the_stream(self.sim, s, lo, hi) for s in self.symbols} == \
            dict.fromkeys(self.symbols, 0)
        self.assert_kafka_holds_each_record_once()
        model = self.sim.model

        def landed() -> bool:
            for symbol in self.symbols:
                for tbk, want in ((f"{symbol}/1Sec/TRADE", model.trades(symbol, lo, hi)),
                                  (f"{symbol}/1Min/QUOTE", model.quotes(symbol, lo, hi))):
                    rows = read_bucket(self.cluster.marketstore_url, tbk)
                    if rows is None or len(rows) < len(want.seq):
                        return False
            return True

        wait_for(landed, timeout_s=180, what="every row in MarketStore")
        assert self.consumer.thread.is_alive(), f"the consumer stopped: {self.consumer.error}"
        for symbol in self.symbols:
            assert_stored_equals_model(self.cluster.marketstore_url, model, symbol, lo, hi)
