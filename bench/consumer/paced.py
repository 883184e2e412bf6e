"""The latency benchmark's load: paced trades with received_ns, in a process of its own."""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import Synchronized

from confluent_kafka import Producer

from common.config import Config
from producer.publisher import producer_properties
from schemas.codec import make_codec
from tests.support.testkit import trade


def paced_publisher(config: Config, rate: int, seconds: float, symbols: list[str],
                    sent_out: Synchronized | None = None) -> None:
    """Publishes trades at ``rate``/s with received_ns = now (a separate process, like the
    real producer, so it does not share the consumer's interpreter), with the producer's own
    Kafka properties (``linger.ms`` and all), so its share of the latency is counted.
    ``sent_out`` receives the number of trades sent, once Kafka has them all."""
    codec = make_codec(config)
    producer = Producer(producer_properties(config, "bench-paced-publisher"))
    topic = config.kafka.topics.trades
    seqs = dict.fromkeys(symbols, 0)
    t0 = time.perf_counter()
    sent = 0
    while time.perf_counter() - t0 < seconds:
        due = int((time.perf_counter() - t0) * rate)
        while sent < due:
            s = symbols[sent % len(symbols)]
            seqs[s] += 1
            now = time.time_ns()
            producer.produce(topic, codec.encode("trade", trade(s, seqs[s], now,
                                                                received_ns=now)), s.encode())
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(30)
    if sent_out is not None:
        sent_out.value = sent
