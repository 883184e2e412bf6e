"""The compiled frame encoder (``schemas._native.Encoder``) bound to a codec and topics.

``encode(frame, received_ns)`` -> (records, counts, last_event_ns): records are
``(topic, value, key)`` ready for ``produce`` (key: :func:`schemas.keys.symbol_key` of the
symbol), counts the records of each of :attr:`kinds`. None when the frame is anything but
a well-formed array of events it takes exactly; the caller then runs the reference path
(``producer.mapping`` + the codec) on the whole frame.

The programs are compiled from the spec (``schemas.program``); the framing comes from the
codec. At start the encoder is checked against the reference on sample events; if the
module was not built, a kind's fields cannot be compiled, or any byte differs, that kind
(or the whole encoder: ``enabled`` False) is left to the reference path.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from producer.mapping import event_timestamp_ns, record_from_ws_event
from schemas.keys import symbol_key
from schemas.native import native
from schemas.program import Unsupported, frame_programs, header_of
from schemas.spec import Kind, spec

log = logging.getLogger(__name__)

NativeResult = tuple[list[tuple[str, bytes, str]], tuple[int, ...], int]

# The shapes the encoder must take: odd but valid values (a fractional size, integral
# prices and sizes, explicit nulls, a one-sided quote), a slash in a symbol, big numbers.
SAMPLES: tuple[dict[str, Any], ...] = (
    {"ev": "T", "sym": "AAPL", "i": "5096", "x": 10, "p": 161.87, "s": 300, "c": [14, 41],
     "t": 1651684192462, "q": 4009402, "z": 3},
    {"ev": "T", "sym": "BRK.A", "i": "12345678901234", "x": 4, "p": 543210.5, "s": 1,
     "t": 1651684192463, "q": 9_000_000_001, "trfi": 202, "trft": 1651684192000},
    {"ev": "Q", "sym": "MSFT", "bx": 4, "bp": 114.125, "bs": 100, "ax": 7, "ap": 114.128,
     "as": 160, "c": 0, "i": [604], "t": 1536036818784, "q": 50385480, "z": 3},
    {"ev": "Q", "sym": "ZZZZ", "bp": 1.0, "bs": 3, "ap": 1.5, "as": 70000, "t": 1,
     "q": 1},
    {"ev": "T", "sym": "AAPL", "i": "77", "x": 4, "p": 168.66, "s": 4, "ds": "4.6856",
     "t": 1704205800001, "q": 5220000068, "z": 3, "c": None},
    {"ev": "Q", "sym": "SPY", "bx": None, "bp": 470, "bs": 1.5, "ax": 12, "ap": 470.01,
     "as": 2, "c": 1, "i": [], "t": 1704205800002, "q": 2**40, "z": None},
    {"ev": "Q", "sym": "SPY", "ax": 12, "ap": 470.01, "as": 2, "t": 1704205800002, "q": 7},
    {"ev": "AM", "sym": "MSFT", "v": 1200, "av": 50000, "op": 410.5, "vw": 411.2, "o": 411.0,
     "h": 411.9, "l": 410.8, "c": 411.5, "a": 410.9, "z": 12, "s": 1704205800000,
     "e": 1704205860000},
    {"ev": "AM", "sym": "OTCX", "v": 3, "dv": "3.25", "o": 1, "h": 1.5, "l": 1, "c": 1.25,
     "s": 1704205800000, "e": 1704205860000, "otc": True},
    {"ev": "T", "sym": "BRK/A", "i": "9", "x": 4, "p": 612000.25, "s": 1,
     "t": 1704205800003, "q": 5220000069},
)


class NativeFrames:
    """See the module docstring. ``kinds``: the kinds of ``encode``'s counts, in order."""

    def __init__(self, codec: Any, topics: Mapping[str, str]) -> None:
        self.enabled = False
        self.kinds: tuple[Kind, ...] = ()
        self._encoder: Any = None
        if native is None:
            return
        kinds = []
        headers = {}
        for kind in Kind:
            sample = next(ev for ev in SAMPLES if ev["ev"] == kind.ev)
            try:
                headers[kind] = header_of(codec, spec(kind), record_from_ws_event(sample, 1)[1])
                frame_programs([spec(kind)], headers, topics)
            except (Unsupported, ValueError, KeyError) as exc:
                log.warning("native frame encoder: %s events take the reference path (%s)",
                            kind, exc)
                continue
            kinds.append(kind)
        if not kinds:
            return
        try:
            compiled = frame_programs([spec(k) for k in kinds], headers, topics)
            encoder = native.Encoder(compiled.keys, compiled.tag_key, compiled.programs)
            samples = [ev for ev in SAMPLES if ev["ev"] in {k.ev for k in kinds}]
            ok = all(_check(encoder, codec, topics, compiled.kinds, samples, received_ns)
                     for received_ns in (1, 1_795_581_905_157_190_423))
        except Exception as exc:  # any surprise means: do not use it
            log.warning("native frame encoder disabled: %s", exc)
            return
        if not ok:
            log.warning("native frame encoder disabled: its bytes differ from the codec's")
            return
        self.kinds = compiled.kinds
        self._encoder = encoder
        self.enabled = True

    def encode(self, frame: bytes, received_ns: int) -> NativeResult | None:
        if self._encoder is None:
            return None
        result: NativeResult | None = self._encoder.encode_frame(frame, (received_ns,))
        return result


def _check(encoder: Any, codec: Any, topics: Mapping[str, str], kinds: tuple[Kind, ...],
           samples: list[dict[str, Any]], received_ns: int) -> bool:
    got = encoder.encode_frame(orjson.dumps(samples), (received_ns,))
    if got is None:
        return False
    records, counts, last_ns = got
    want = []
    for ev in samples:
        kind, record = record_from_ws_event(ev, received_ns)
        want.append((topics[kind], codec.encode(kind, record), symbol_key(record["symbol"])))
    last_kind, last_record = record_from_ws_event(samples[-1], received_ns)
    return (records == want
            and list(counts) == [sum(ev["ev"] == k.ev for ev in samples) for k in kinds]
            and last_ns == event_timestamp_ns(last_kind, last_record))
