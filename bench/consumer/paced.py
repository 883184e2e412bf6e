"""The latency benchmark's load: paced trades as WebSocket frames, in a process of its own."""

from __future__ import annotations

import time
from multiprocessing.sharedctypes import Synchronized

import orjson

from common.config import Config
from producer.mapping import record_from_ws_event
from producer.nativeframes import NativeFrames
from producer.publisher import Publisher
from schemas.codec import make_codec
from schemas.spec import Kind


def paced_publisher(config: Config, rate: int, seconds: float, symbols: list[str],
                    sent_out: Synchronized | None = None) -> None:
    """Trades at ``rate``/s, in one ``T`` frame per tick with received_ns = the tick's
    time, through the producer's own frame encoder and publisher (its Kafka properties,
    ``linger.ms`` and all), so the latency counts what the producer adds after receipt.
    A separate process, like the real producer, so it does not share the consumer's
    interpreter. ``sent_out`` receives the number of trades sent, once Kafka has them."""
    codec = make_codec(config)
    topics = config.kafka.topics
    publisher = Publisher(config, "bench-paced-publisher", codec=codec)
    frames = NativeFrames(codec, {"bar": topics.bars, "trade": topics.trades,
                                  "quote": topics.quotes})
    seq = 0
    t0 = time.perf_counter()
    sent = 0
    while time.perf_counter() - t0 < seconds:
        due = int((time.perf_counter() - t0) * rate)
        if due > sent:
            now = time.time_ns()
            events = []
            for _ in range(due - sent):
                seq += 1
                events.append({"ev": "T", "sym": symbols[seq % len(symbols)], "i": str(seq),
                               "x": 4, "p": 100.25, "s": 100, "c": [14, 41],
                               "t": now // 1_000_000, "q": seq, "z": 3})
            encoded = frames.encode(orjson.dumps(events), now)
            if encoded is not None:
                publisher.produce_routed(encoded[0], {Kind.TRADE: len(events)})
            else:  # the compiled encoder is not built: the reference mapping
                publisher.produce_many(
                    [(kind, record["symbol"], codec.encode(kind, record))
                     for kind, record in (record_from_ws_event(ev, now) for ev in events)])
            sent = due
        publisher.poll(0)
        time.sleep(0.002)
    publisher.flush(30)
    if sent_out is not None:
        sent_out.value = sent
