"""schemas._native.Encoder (via producer.nativeframes.NativeFrames) gives, for a whole
frame, exactly what the reference path gives (orjson -> mapping -> codec), or None.

None is always allowed (the caller then runs the Python path on the frame); a result that
differs by one byte, or a result for a frame the Python path would reject in any part, is
a bug. The frames here are the simulator's, then the same mutated field by field and byte
by byte.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from backfill.nativepages import NativePages
from common.config import Config
from producer.mapping import record_from_ws_event
from producer.nativeframes import NativeFrames
from schemas.codec import make_codec
from schemas.keys import symbol_key
from tests.support.mutation import FRAME_ALPHABET, PAGE_ALPHABET, mutate
from tests.support.nativeframes import (
    RECEIVED,
    TOPICS,
    check_frame,
    check_page,
    events_by_time,
    minute_bars,
    reference_frame,
    simulator_pages,
)

native = pytest.importorskip("schemas._native", reason="the C extension was not built")

@pytest.fixture(scope="module")
def codec() -> Any:
    return make_codec(Config())


@pytest.fixture(scope="module")
def frames_encoder(codec: Any) -> NativeFrames:
    enc = NativeFrames(codec, TOPICS)
    assert enc.enabled
    assert set(enc.kinds) == {"bar", "trade", "quote"}
    return enc


def test_simulator_frames_take_the_native_path(frames_encoder: NativeFrames,
                                               codec: Any) -> None:
    events = events_by_time()
    assert len(events) > 5000
    # the simulator sends fractional sizes as "ds" strings: they must not force a fallback
    assert any("ds" in ev for ev in events)
    for i in range(0, len(events), 500):
        assert check_frame(frames_encoder, codec, orjson.dumps(events[i:i + 500]))


def test_odd_values_never_differ(frames_encoder: NativeFrames, codec: Any) -> None:
    weird = [None, True, False, 0, -0.0, -1, 1.5, 2.0, 1e300, 1e-300, 8191, 8192, -8193,
             2**31 - 1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1,
             "", "x", "1.5", "-0", "0.1e2", " 1", "1_0", "nan", "inf", "4.", ".5",
             [], [1], [1, 2**31], [1.0], [True], [None], {}, {"a": [1, {"b": None}]},
             "\u00e9\u4e2d", 'a"b', "a\\b", "\n", "BRK/A", "/", "A//B"]
    rng = random.Random(7)
    events = events_by_time()[:300]
    taken = 0
    for ev in events:
        for key in [*ev, "ds", "zz", "trft", "trfi", "c"]:
            for value in rng.sample(weird, 8):
                frame = orjson.dumps([ev, {**ev, key: value}])
                taken += check_frame(frames_encoder, codec, frame)
            frame = orjson.dumps([{k: v for k, v in ev.items() if k != key}])
            taken += check_frame(frames_encoder, codec, frame)
    assert taken > 1000  # the odd but valid shapes are taken, not all thrown back


def test_symbols_with_a_slash_are_keyed_as_their_bucket(frames_encoder: NativeFrames,
                                                        codec: Any) -> None:
    """The key is the bucket's spelling (``BRK/A`` -> ``BRK.A``, schemas.keys), the value
    keeps Massive's; check_frame compares both with the Python path."""
    events = events_by_time()[:300]
    for sym in ("BRK/A", "BRK.A", "A/B/C", "/", "X/", "/X", "a" * 255 + "/"):
        frame = orjson.dumps([{**ev, "sym": sym} if i % 3 == 0 else ev
                              for i, ev in enumerate(events)])
        assert check_frame(frames_encoder, codec, frame), sym
        records = frames_encoder.encode(frame, 1)[0]  # type: ignore[index]
        assert records[0][2] == symbol_key(sym) == sym.replace("/", ".")
    # longer than the native encoder takes: the Python path's (no key of its own to check)
    assert frames_encoder.encode(orjson.dumps([{**events[0], "sym": "a" * 256 + "/"}]),
                                 1) is None


def test_hand_written_json_never_differs(frames_encoder: NativeFrames, codec: Any) -> None:
    base = (b'{"ev":"T","sym":"AAPL","i":"12","x":4,"p":%s,"s":%s,"t":1704205800001,'
            b'"q":77,"z":3%s}')
    numbers = [b"1", b"-0", b"0.0", b"-0.0", b"1e2", b"1E+2", b"1.5e-3", b"123456789.123456789",
               b"0.30000000000000004", b"9007199254740993", b"9007199254740993.0",
               b"1.7976931348623157e308", b"2e308", b"4.9e-324", b"01", b"1.", b".5", b"+1",
               b"-", b"1e", b"0x10", b"NaN", b"Infinity", b"18446744073709551615",
               b"18446744073709551616", b"1" + b"0" * 400, b"1704205e800085", b"1e-400",
               b"1." + b"0" * 70]
    extras = [b"", b',"c":[]', b',"c":[ 1 , 2 ]', b',"c":null', b',"ds":"0.5"', b',"ds":1',
              b',"ds":null', b',"zz":1e400', b',"zz":1' + b'0' * 400, b',"zz":-1e-400',
              b',"zz":18446744073709551615', b',"zz":{"a":[1,2,{"b":"c"}]}', b',"zz":"\\u00e9"',
              b',"zz":[[[[[]]]]]', b',"x":5', b',"ev":"T"', b',"sym":"MSFT"', b',"zz":tru',
              b',"zz":true', b',"zz":nul', b',', b',"c":[1,]', b',"zz":{"a":1,}']
    for price in numbers:
        for size in (b"100", b"0.5", b"1e3"):
            for extra in extras:
                one = base % (price, size, extra)
                for frame in (b"[" + one + b"]", b" [ " + one + b" , " + one + b" ] ",
                              b"[" + one + b"]x", b"[" + one, b"[" + one + b",]"):
                    check_frame(frames_encoder, codec, frame)


def test_byte_level_corruption_never_differs(frames_encoder: NativeFrames, codec: Any) -> None:
    rng = random.Random(11)
    events = events_by_time()
    taken = 0
    for _ in range(10_000):
        start = rng.randrange(len(events) - 30)
        frame = orjson.dumps(events[start:start + rng.randint(1, 30)])
        taken += check_frame(frames_encoder, codec, mutate(rng, frame, FRAME_ALPHABET))
    assert taken > 1000  # harmless mutations (whitespace, values) still take the C path


def test_minute_bars_take_the_native_path(frames_encoder: NativeFrames, codec: Any) -> None:
    bars = minute_bars()
    bars[::7] = [{**b, "otc": True} for b in bars[::7]]
    assert len(bars) > 100 and any("dv" in b for b in bars)
    trades = events_by_time()[:50]
    for i in range(0, len(bars), 40):
        assert check_frame(frames_encoder, codec, orjson.dumps(bars[i:i + 40]))
        assert check_frame(frames_encoder, codec, orjson.dumps([*bars[i:i + 5], *trades]))
    rng = random.Random(9)
    weird = [None, True, False, 0, -1, 1.5, 2**63, "", "1.5", "x", [], {}]
    for bar in bars[:60]:
        for key in [*bar, "otc", "dav"]:
            check_frame(frames_encoder, codec, orjson.dumps([{**bar, key: rng.choice(weird)}]))


def test_other_frames_are_left_to_the_python_path(frames_encoder: NativeFrames) -> None:
    status = {"ev": "status", "status": "auth_success", "message": "authenticated"}
    trade = events_by_time()[0]
    for frame in ([], [status], [trade, status], [trade, {"ev": "XX"}],
                  [trade, [1]], {"ev": "T"}, "T", None):
        for received_ns in RECEIVED:
            assert frames_encoder.encode(orjson.dumps(frame), received_ns) is None
    assert frames_encoder.encode(b"", 1) is None
    assert frames_encoder.encode(b"\xff\xfe", 1) is None


class _Message:
    """Stands in for confluent_kafka.Message in the pure tests of scan_messages."""

    def __init__(self, topic: str, partition: int, offset: int, value: Any,
                 error: Any = None) -> None:
        self._t, self._p, self._o, self._v, self._e = topic, partition, offset, value, error

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> Any:
        return self._v

    def error(self) -> Any:
        return self._e


def _python_scan(msgs: list[Any]) -> tuple[bytes, list[int], dict[tuple[str, int], int]]:
    values = [m.value() or b"" for m in msgs]
    return (b"".join(values), [len(v) for v in values],
            {(m.topic(), m.partition()): m.offset() for m in msgs})


def test_scan_messages_equals_the_python_loop() -> None:
    rng = random.Random(3)
    msgs = [_Message(rng.choice(["a", "b"]), rng.randrange(3), i, rng.choice(
        [None, b"", b"x" * rng.randrange(50)])) for i in range(500)]
    data, lengths, last = native.scan_messages(msgs, 7)
    want_data, want_lengths, want_last = _python_scan(msgs)
    assert data == want_data + bytes(7)
    assert list(memoryview(lengths).cast("q")) == want_lengths
    assert last == want_last
    assert native.scan_messages([], 0) == (b"", bytearray(), {})


def test_scan_messages_leaves_errors_and_odd_values_to_python() -> None:
    ok = _Message("a", 0, 1, b"v")
    assert native.scan_messages([ok, _Message("a", 0, 2, None, error="EOF")], 0) is None
    assert native.scan_messages([ok, _Message("a", 0, 2, "text")], 0) is None

    class Broken(_Message):
        def offset(self) -> int:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        native.scan_messages([ok, Broken("a", 0, 2, b"v")], 0)


@pytest.mark.integration
def test_decode_messages_on_a_real_poll(kafka_bootstrap: str) -> None:
    """Messages consumed from the real broker: decode_messages gives what decode_batch of
    their values gives, and the last offset of every partition."""
    import uuid

    from confluent_kafka import Consumer, Producer

    from common.config import KafkaConfig, TopicsConfig
    from schemas.batch import decode_batch, decode_messages
    from schemas.topics import ensure_topics
    from tests.support.batchrows import row

    suffix = uuid.uuid4().hex[:8]
    topics = TopicsConfig(**{name: f"native-{name}-{suffix}"
                             for name in ("bars", "trades", "quotes", "dead_letter")})
    config = Config(kafka=KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=topics,
                                      partitions=3))
    ensure_topics(config)
    codec = make_codec(config)
    events = events_by_time()[:3000]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for ev in events:
        kind, record = record_from_ws_event(ev, 1)
        topic = config.kafka.topics.trades if kind == "trade" else config.kafka.topics.quotes
        producer.produce(topic, codec.encode(kind, record), record["symbol"])
    producer.produce(config.kafka.topics.trades, b"\x00garbage", b"X")  # a poison message
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"native-{suffix}",
                         "auto.offset.reset": "earliest", "enable.partition.eof": False})
    consumer.subscribe([config.kafka.topics.trades, config.kafka.topics.quotes])
    msgs: list[Any] = []
    try:
        for _ in range(60):
            msgs += consumer.consume(5000, 1.0)
            if len(msgs) >= len(events) + 1:
                break
    finally:
        consumer.close()
    assert len(msgs) == len(events) + 1
    got = decode_messages(codec, msgs)
    assert got is not None
    result, last = got
    want = decode_batch(codec, [m.value() or b"" for m in msgs])
    assert last == {(m.topic(), m.partition()): m.offset() for m in msgs}
    assert {k: v.tolist() for k, v in result.rows.items()} == \
        {k: v.tolist() for k, v in want.rows.items()}
    for kind, index in result.rows.items():
        for j in range(len(index)):
            assert row(result, kind, j) == row(want, kind, j)
    assert [(i, str(e)) for i, e in result.errors] == [(i, str(e)) for i, e in want.errors]
    assert len(result.errors) == 1


def test_the_built_module_is_the_one_the_code_expects() -> None:
    """An outdated build would be skipped (slow, silently but for a warning): the build
    the tests run against must be current."""
    from schemas import native as loader

    assert native.API_VERSION == loader.API_VERSION
    assert loader.native is native


def test_misuse_is_an_error_not_a_crash() -> None:
    with pytest.raises(RuntimeError, match="__init__"):
        native.Encoder.__new__(native.Encoder).encode_frame(b"[]", ())
    one = [("c", "l", (), b"\x00", None, 0, 0)]
    enc = native.Encoder(["ev"], "ev", [("T", b"h", "t", -1, -1, one)])
    with pytest.raises(TypeError):
        enc.encode_frame("[]", ())  # str, not bytes
    with pytest.raises(TypeError):
        enc.encode_frame(b"[]", (1.5,))  # a parameter is None, str or int
    with pytest.raises(IndexError):
        enc.encode_page(b"{}", 1, ())
    with pytest.raises(RuntimeError, match="tag key"):
        native.Encoder(["a"], None, []).encode_frame(b"[]", ())
    for keys, tag, programs in (
            (["ev"], "ev", [("T", bytes(65), "t", -1, -1, one)]),  # header too long
            (["ev", "ev"], "ev", []),  # a key twice
            (["ev"], "zz", []),  # the tag is no key
            (["ev"], "ev", [("T", b"", "t", -1, -1, [("j", "l", ((5, "l", 1),), b"", None,
                                                       0, 0)])]),  # no such key
            (["ev"], "ev", [("T", b"", "t", -1, -1, [("j", "d", ((0, "d", 1000),), b"",
                                                       None, 0, 0)])]),  # a scaled double
            (["ev"], "ev", [("T", b"", "t", -1, -1, [("+", "l", (), b"", None, 0, 0)])]),
            (["ev"], "ev", [("T", b"", "t", -1, 0, one)]),  # a key field that is no string
            (["ev"], "ev", [("T", b"", "t", 3, -1, one)])):  # a time field out of range
        with pytest.raises(ValueError):
            native.Encoder(keys, tag, programs)
    with pytest.raises(ValueError, match="differ in length"):
        native.decode_rows(b"", bytes(8), bytes(16), [])


def test_a_one_sided_quote_in_a_frame_gets_the_reference_bytes(frames_encoder: NativeFrames,
                                                              codec: Any) -> None:
    """A quote without a bid (or ask) price: the frame is left to the Python path, which
    writes NaN; or, if the native encoder takes it, the very same bytes."""
    quotes = [e for e in events_by_time() if e["ev"] == "Q"][:20]
    for absent in (("bp", "bs"), ("ap", "as"), ("bp",)):
        one_sided = {k: v for k, v in quotes[7].items() if k not in absent}
        frame = orjson.dumps([*quotes[:7], one_sided, *quotes[8:]])
        check_frame(frames_encoder, codec, frame)
        want = reference_frame(codec, frame, RECEIVED[0])
        assert want is not None
        _, record = codec.decode(want[0][7][1])
        empty, full = ("bid", "ask") if "bp" in absent else ("ask", "bid")
        assert math.isnan(record[f"{empty}_price"])
        assert record[f"{full}_price"] == quotes[7][f"{full[0]}p"]


@pytest.mark.parametrize("program", [
    [("0", 0, 0, 0), ("l", 0, 0, 0)],
    [("l", 0, 0, 0), ("0", 0, 0, 0), ("s", 0, 0, 0)],
    [("0", 0, 0, 0)],
])
def test_a_plain_null_field_survives_a_bad_row(program: list[tuple[str, int, int, int]]) -> None:
    """A "null" field has no values; the reset of a bad row must not treat it as a list."""
    data = b"\x02\x02\x04\x06\x02x"
    starts, ends = [0, 1, 4], [1, 4, 6]  # row 1 is malformed or too long for every program
    cols, bad = native.decode_rows(data, np.array(starts, dtype=np.int64).tobytes(),
                                   np.array(ends, dtype=np.int64).tobytes(), program)
    assert bad[1] == 1
    for (code, *_), (values, mask, offsets) in zip(program, cols, strict=True):
        if code == "0":
            assert (values, mask, offsets) == (None, None, None)


# -- REST pages (backfill.nativepages) ------------------------------------------------


@pytest.fixture(scope="module")
def pages_encoder(codec: Any) -> NativePages:
    pages = NativePages(codec)
    assert set(pages.kinds) == {"bar", "trade", "quote"}
    return pages


def _body(results: Any, **envelope: Any) -> bytes:
    return orjson.dumps({"results": results, "status": "OK", "request_id": "r1",
                         "count": len(results) if type(results) is list else 0, **envelope})


def test_simulator_pages_take_the_native_path(pages_encoder: NativePages, codec: Any) -> None:
    for kind, results in simulator_pages().items():
        assert len(results) > 100, kind
        for symbol in ("AAPL", "BRK/A"):
            body = _body(results, next_url="https://api.massive.com/v3/x?cursor=YWJj")
            assert check_page(pages_encoder, codec, kind, body, symbol), kind
        # the envelope is read as orjson reads it, escapes and all
        body = _body(results[:10], next_url="https://h/v3?a=1\\u0026cursor=\\u00e9")
        assert check_page(pages_encoder, codec, kind, body.replace(b"\\\\", b"\\"))
    for timeframe in ("5Min", "1H"):
        bars = simulator_pages()["bar"][:50]
        assert check_page(pages_encoder, codec, "bar", _body(bars), timeframe=timeframe)


def test_odd_results_never_differ(pages_encoder: NativePages, codec: Any) -> None:
    weird = [None, True, False, 0, -0.0, -1, 1.5, 2.0, 1e300, 2**31, -(2**31) - 1, 2**53 + 1,
             2**63 - 1, -(2**63), 2**64 - 1, "", "x", "1.5", "-0", " 1", "nan", "4.", [],
             [1], [1, 2**31], [1.0], [True], [None], {}, {"a": [1]}, "\u00e9", 'a"b']
    rng = random.Random(17)
    taken = 0
    for kind, results in simulator_pages().items():
        for result in results[:40]:
            for key in [*result, "decimal_size", "conditions", "otc", "zz"]:
                for value in rng.sample(weird, 6):
                    body = _body([result, {**result, key: value}])
                    taken += check_page(pages_encoder, codec, kind, body)
                body = _body([{k: v for k, v in result.items() if k != key}])
                taken += check_page(pages_encoder, codec, kind, body)
    assert taken > 1000


def test_byte_level_corruption_of_pages_never_differs(pages_encoder: NativePages,
                                                      codec: Any) -> None:
    rng = random.Random(23)
    taken = 0
    for kind, results in simulator_pages().items():
        for _ in range(2000):
            start = rng.randrange(len(results) - 10)
            body = _body(results[start:start + rng.randint(0, 10)], next_url="http://h/?c=1")
            taken += check_page(pages_encoder, codec, kind, mutate(rng, body, PAGE_ALPHABET))
    assert taken > 500


def test_other_pages_are_left_to_the_reference_path(pages_encoder: NativePages,
                                                    codec: Any) -> None:
    trade = simulator_pages()["trade"][0]
    decode = pages_encoder.decoder("trade", "AAPL")
    assert decode is not None
    for body in (b"", b"[]", b"null", b'{"results": {}}', b'{"results": [1]}',
                 b'{"results": [], "results": []}', b'{"results": []} x',
                 _body([trade, {**trade, "price": "1.5"}]), b'{"results": [{}]}'):
        assert decode(body) is None, body
    for body in (b"{}", b'{"status": "OK"}', b'{"results": null}', b'{"results": []}'):
        assert check_page(pages_encoder, codec, "trade", body)
    # a day's end follows the market's calendar: the reference path computes it
    assert pages_encoder.decoder("bar", "AAPL", "1D") is None
    assert pages_encoder.decoder("bar", "AAPL", None) is None


def test_a_field_added_to_a_copy_of_trade_avsc_reaches_both_native_paths(
        tmp_path: Path) -> None:
    """The programs come from the spec: a field annotated in the .avsc only is read from
    the WebSocket and REST JSON and written where the reference writes it."""
    import json
    import shutil

    from backfill.mapping import rest_mapper
    from producer.mapping import WsMapping
    from schemas.codec import Codec
    from schemas.program import frame_programs, header_of, page_programs
    from schemas.spec import SCHEMA_DIR, Kind, load_specs

    for kind in Kind:
        shutil.copy(SCHEMA_DIR / kind.avsc, tmp_path / kind.avsc)
    schema = json.loads((tmp_path / "trade.avsc").read_text())
    schema["fields"].append({
        "name": "venue_flags", "type": ["null", "int"], "default": None,
        "massive": {"ws": {"rule": "optional", "keys": ["vf"]},
                    "rest": {"rule": "optional", "keys": ["venue_flags"]}}})
    (tmp_path / "trade.avsc").write_text(json.dumps(schema))
    specs = load_specs(tmp_path)
    codec = Codec({k: s.schema for k, s in specs.items()})
    ws = WsMapping(specs)
    events = [{**ev, "vf": 7} if i % 2 else ev for i, ev in enumerate(events_by_time()[:200])]
    headers = {k: header_of(codec, specs[k], ws.record(next(
        e for e in events if e["ev"] == k.ev), 1)[1]) for k in (Kind.TRADE, Kind.QUOTE)}
    frames = frame_programs([specs[Kind.TRADE], specs[Kind.QUOTE]], headers, TOPICS)
    encoder = native.Encoder(frames.keys, frames.tag_key, frames.programs)
    records, _, _ = encoder.encode_frame(orjson.dumps(events), (5,))
    for ev, (_, value, _) in zip(events, records, strict=True):
        kind, record = ws.record(ev, 5)
        assert value == codec.encode(kind, record)
        if kind == Kind.TRADE:
            assert codec.decode(value)[1]["venue_flags"] == ev.get("vf")

    results = [{**r, "venue_flags": 9} if i % 2 else r
               for i, r in enumerate(simulator_pages()["trade"][:200])]
    pages = page_programs([specs[Kind.TRADE]], headers)
    encoder = native.Encoder(pages.keys, pages.tag_key, pages.programs)
    values, _, _ = encoder.encode_page(orjson.dumps({"results": results}), 0,
                                       ("AAPL", None, None))
    mapper = rest_mapper(specs[Kind.TRADE])
    assert values == [codec.encode(Kind.TRADE, mapper(r, "AAPL", None)) for r in results]
    assert {codec.decode(v)[1]["venue_flags"] for v in values} == {None, 9}
