"""producer.liveencode gives exactly codec.encode(record_from_ws_event(...)) or None."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from common.config import Config
from producer.liveencode import LiveEncoder
from producer.mapping import MappingError, record_from_ws_event
from schemas.codec import make_codec
from tests.support.nativeframes import simulator_events

DATA = Path(__file__).parent / "data" / "producer"


@pytest.fixture(scope="module")
def codec() -> Any:
    return make_codec(Config())


def _reference(codec: Any, ev: Any, received_ns: int) -> tuple[str, str, bytes, int] | None:
    try:
        kind, record = record_from_ws_event(ev, received_ns)
        value = codec.encode(kind, record)
    except (MappingError, ValueError, TypeError, KeyError, OverflowError):
        return None
    ts = record["end_ns"] if kind == "bar" else record["sip_timestamp_ns"]
    return kind, record["symbol"], value, ts


def _mutations(ev: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    weird = [None, True, False, 0, -1, 1.5, 2.0, 8191, 8192, -8193, 2**31, 2**63, 10**30,
             "", "x", "1.5", [], [1], [1.0], [True], {}, "\u00e9\u4e2d"]
    out = []
    for key in list(ev):
        for value in rng.sample(weird, 6):
            out.append({**ev, key: value})
        out.append({k: v for k, v in ev.items() if k != key})
    return out


def test_identical_bytes_on_simulator_events(codec: Any) -> None:
    enc = LiveEncoder(codec)
    assert enc.enabled
    events = simulator_events()
    assert len(events) > 10_000
    fast_hits = 0
    for received_ns in (1_795_581_905_157_190_423, 0):
        recv = enc.received(received_ns)
        for ev in events:
            want = _reference(codec, ev, received_ns)
            got = enc.encode(ev, recv)
            assert want is not None
            if got is not None:
                fast_hits += 1
                assert got == want, ev
    assert fast_hits > len(events)  # the fast path takes the common shape


def test_never_differs_from_the_reference_on_odd_events(codec: Any) -> None:
    enc = LiveEncoder(codec)
    rng = random.Random(5)
    base = [json.loads(line) for line in (DATA / "good_frames.jsonl").read_text().splitlines()]
    events = [e for frame in base for e in frame if e.get("ev") in ("T", "Q")]
    recv = enc.received(123)
    checked = 0
    for ev in events:
        for odd in _mutations(ev, rng):
            got = enc.encode(odd, recv)
            if got is not None:
                assert got == _reference(codec, odd, 123), odd
            checked += 1
    assert checked > 300
    assert enc.encode({"ev": "AM"}, recv) is None
    assert enc.encode({"ev": ["T"]}, recv) is None
    assert enc.encode({"sym": "A"}, recv) is None


def test_disables_itself_when_the_codec_writes_other_bytes(codec: Any) -> None:
    class Other:
        def encode(self, kind: str, record: dict[str, Any]) -> bytes:
            return codec.encode(kind, {**record, "received_ns": None})

    assert not LiveEncoder(Other()).enabled


ONE_SIDED_BASE = {"ev": "Q", "sym": "MSFT", "bx": 4, "bp": 114.125, "bs": 100, "ax": 7,
                  "ap": 114.128, "as": 160, "c": 0, "i": [604], "t": 1536036818784,
                  "q": 50385480, "z": 3}


@pytest.mark.parametrize("absent", [("bp", "bs"), ("ap", "as"), ("bp",), ("ap",)])
def test_a_one_sided_quote_gets_the_reference_bytes_with_a_nan_price(
        codec: Any, absent: tuple[str, ...]) -> None:
    """Absent or null, a missing price is NaN on every path; the fast encoder leaves the
    shape to the reference path (None) or writes the very same bytes."""
    enc = LiveEncoder(codec)
    recv = enc.received(123)
    for ev in ({k: v for k, v in ONE_SIDED_BASE.items() if k not in absent},
               {**ONE_SIDED_BASE, **dict.fromkeys(absent)}):
        want = _reference(codec, ev, 123)
        assert want is not None
        got = enc.encode(ev, recv)
        assert got is None or got == want
        _, record = codec.decode(want[2])
        empty, full = ("bid", "ask") if "bp" in absent else ("ask", "bid")
        assert math.isnan(record[f"{empty}_price"])
        assert record[f"{full}_price"] == ONE_SIDED_BASE[f"{full[0]}p"]
        assert record[f"{empty}_size"] == (0.0 if f"{empty[0]}s" in absent
                                           else ONE_SIDED_BASE[f"{empty[0]}s"])
