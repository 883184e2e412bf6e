"""WS event -> framed Avro bytes in one step, for the live hot path.

``codec.encode(*record_from_ws_event(ev, received_ns))`` is the definition; this module
produces the very same bytes without building the record dict in between, which is where
the per-event time goes at hundreds of thousands of events per second:

* it reads the WS fields once and writes their Avro encoding straight away;
* values shared by many events are encoded once: the receipt time (one per frame), the
  symbol (per symbol) and the SIP timestamp (live timestamps are milliseconds, so a busy
  frame repeats each one many times);
* fields the live feed never carries are constant bytes.

It only takes the common, well-formed shape (checked strictly, e.g. an int is never a
bool and a float price never an int). Anything else returns None and the caller uses the
reference path, which gives the same bytes or a clear MappingError. At construction the
encoder checks itself against the codec on sample events; if the schemas or the framing
differ from what it was written for (a new field, a registry), it disables itself
(``enabled`` is False) and every event takes the reference path.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import orjson

from producer.mapping import NS_PER_MS, record_from_ws_event
from schemas import fastpath
from schemas.keys import symbol_key
from schemas.native import native

# the compiled frame encoder; optional (None: the Python path only)
FrameEncoder = native.FrameEncoder if native is not None else None

log = logging.getLogger(__name__)

_SMALL_LIMIT = 1 << 13


# The codec's table-driven varint pieces (14 bits per lookup), shared rather than copied.
_CHUNK = fastpath._CHUNK
_LAST = fastpath._LAST
_varint = fastpath._varint_bytes
_long = fastpath.encode_long


# zigzag varint of every small int; keys are ints only (a float key would also match a
# dict lookup, so callers check the class first)
SMALL: dict[int, bytes] = {v: _long(v) for v in range(-_SMALL_LIMIT, _SMALL_LIMIT)}
NULL = b"\x00"  # union branch 0 (null), also an empty array and enum symbol 0 ("live")
SOME = b"\x02"  # union branch 1
# [null, int] union holding a small int: branch 1 + the value
SOME_SMALL: dict[int, bytes] = {v: SOME + b for v, b in SMALL.items()}
_DD = struct.Struct("<dd").pack

Result = tuple[str, str, bytes, int]  # kind, symbol, framed value, event time ns

SAMPLES: tuple[dict[str, Any], ...] = (
    {"ev": "T", "sym": "AAPL", "i": "5096", "x": 10, "p": 161.87, "s": 300, "c": [14, 41],
     "t": 1651684192462, "q": 4009402, "z": 3},
    {"ev": "T", "sym": "BRK.A", "i": "12345678901234", "x": 4, "p": 543210.5, "s": 1,
     "t": 1651684192463, "q": 9_000_000_001, "trfi": 202, "trft": 1651684192000},
    {"ev": "Q", "sym": "MSFT", "bx": 4, "bp": 114.125, "bs": 100, "ax": 7, "ap": 114.128,
     "as": 160, "c": 0, "i": [604], "t": 1536036818784, "q": 50385480, "z": 3},
    {"ev": "Q", "sym": "ZZZZ", "bp": 1.0, "bs": 3, "ap": 1.5, "as": 70000, "t": 1,
     "q": 1},
)


class LiveEncoder:
    """``encode(ev, recv)`` -> (kind, symbol, bytes, event_ns), or None for the slow path.

    ``recv`` is :meth:`received` of the frame's receipt time. Not thread-safe (caches).
    """

    def __init__(self, codec: Any) -> None:
        self._codec = codec
        self._symbols: dict[str, bytes] = {}
        self._times: dict[int, bytes] = {}
        self._high: dict[int, bytes] = {}  # varint of n >> 14, for sequence numbers
        self._lists: dict[tuple[int, ...], bytes] = {}  # int arrays (conditions, indicators)
        self._trade_header = self._quote_header = b""
        self._dispatch: dict[str, Callable[[dict[str, Any], bytes], Result | None]] = {
            "T": self.trade, "Q": self.quote}
        self.enabled = False
        try:
            trade_header, quote_header = self._header("trade"), self._header("quote")
            self._trade_header, self._quote_header = trade_header, quote_header
            self.enabled = all(self._check(ev) for ev in SAMPLES)
        except Exception as exc:  # any surprise means: do not use the fast path
            log.warning("live fast encoder disabled: %s", exc)
            return
        if not self.enabled:
            log.warning("live fast encoder disabled: its bytes differ from the codec's "
                        "(schema or framing changed); using the reference path")

    def _header(self, kind: str) -> bytes:
        """The codec's framing prefix: what precedes the body of any record of ``kind``."""
        ev = next(e for e in SAMPLES if e["ev"] == ("T" if kind == "trade" else "Q"))
        _, record = record_from_ws_event(ev, 1)
        full = self._codec.encode(kind, record)
        result = (self.trade if kind == "trade" else self.quote)(ev, self.received(1))
        assert result is not None
        body = result[2]
        if not full.endswith(body):
            raise ValueError(f"{kind}: body differs from the codec's")
        return full[:len(full) - len(body)]

    def _check(self, ev: dict[str, Any]) -> bool:
        for received_ns in (1, 1_795_581_905_157_190_423):
            kind, record = record_from_ws_event(ev, received_ns)
            fast = self.encode(ev, self.received(received_ns))
            if fast is None or fast[2] != self._codec.encode(kind, record):
                return False
            if fast[:2] != (kind, record["symbol"]):
                return False
        return True

    @staticmethod
    def received(received_ns: int) -> bytes:
        """The encoded ``received_ns`` union (computed once per frame)."""
        return SOME + _long(received_ns)

    def encode(self, ev: dict[str, Any], recv: bytes) -> Result | None:
        try:
            fn = self._dispatch[ev["ev"]]
        except (KeyError, TypeError):
            return None
        try:
            return fn(ev, recv)
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
            return None

    # -- per kind (field order of schemas/trade.avsc and schemas/quote.avsc) ------------

    def _sym(self, sym: Any) -> bytes | None:
        b = self._symbols.get(sym)
        if b is None:
            if sym.__class__ is not str or not sym:
                return None
            raw = sym.encode()
            b = SMALL[len(raw)] + raw if len(raw) < _SMALL_LIMIT else None
            if b is None:
                return None
            if len(self._symbols) > 100_000:
                self._symbols.clear()
            self._symbols[sym] = b
        return b

    def _time(self, t_ms: int) -> bytes:
        b = self._times.get(t_ms)
        if b is None:
            b = _long(t_ms * NS_PER_MS)
            if len(self._times) > 4096:
                self._times.clear()
            self._times[t_ms] = b
        return b

    def _seq(self, v: int) -> bytes:
        """Zigzag varint of a long that grows slowly (sequence numbers): the low 14 bits
        from a table, the rest from a cache (it changes every 16384 values)."""
        n = (v << 1) ^ (v >> 63)
        if n < 16384:
            if n < 0:
                raise OverflowError(v)
            return _LAST[n]
        high = n >> 14
        b = self._high.get(high)
        if b is None:
            if high >> 50:
                raise OverflowError(v)
            b = _varint(high)
            if len(self._high) > 4096:
                self._high.clear()
            self._high[high] = b
        return _CHUNK[n & 0x3FFF] + b

    def _ints(self, values: list[Any]) -> bytes | None:
        """An Avro array of ints, or None unless every item is a small int. The class
        check comes first: 14.0 == 14, so a cache lookup alone would accept floats."""
        if not values:
            return NULL
        for v in values:
            if v.__class__ is not int:
                return None
        key = tuple(values)
        b = self._lists.get(key)
        if b is None:
            try:
                b = SMALL[len(values)] + b"".join([SMALL[v] for v in values]) + NULL
            except KeyError:
                return None
            if len(self._lists) > 4096:
                self._lists.clear()
            self._lists[key] = b
        return b

    def trade(self, ev: dict[str, Any], recv: bytes) -> Result | None:
        g = ev.get
        sym = ev["sym"]
        t = ev["t"]
        p = ev["p"]
        s = ev["s"]
        x = ev["x"]
        i = ev["i"]
        q = ev["q"]
        z = g("z")
        c = g("c")
        trfi = g("trfi")
        trft = g("trft")
        if not (t.__class__ is int and p.__class__ is float and s.__class__ is int
                and x.__class__ is int and i.__class__ is str and i
                and q.__class__ is int and "ds" not in ev):
            return None
        # cache hits inline (a method call per field is a measurable share of the time)
        symb = self._symbols.get(sym) or self._sym(sym)
        if symb is None:
            return None
        times = self._times
        if z is None:
            tape = NULL
        elif z.__class__ is int:
            tape = SOME_SMALL[z]
        else:
            return None
        conds: bytes | None  # None: an item that is not a small int
        if c is None:
            conds = NULL
        elif c.__class__ is list:
            conds = self._ints(c)
            if conds is None:
                return None
        else:
            return None
        if trft is None:
            trf_ts = NULL
        elif trft.__class__ is int:
            trf_ts = SOME + (times.get(trft) or self._time(trft))
        else:
            return None
        if trfi is None:
            trf_id = NULL
        elif trfi.__class__ is int:
            trf_id = SOME_SMALL[trfi]
        else:
            return None
        n = (q << 1) ^ (q >> 63)
        high = self._high.get(n >> 14) if n >= 16384 else None
        seq = self._seq(q) if high is None else _CHUNK[n & 0x3FFF] + high
        ib = i.encode()
        value = b"".join((
            self._trade_header, symb, times.get(t) or self._time(t), NULL, trf_ts,
            _DD(p, s), SMALL[x], tape, conds, SMALL[len(ib)], ib, seq, trf_id, NULL, NULL,
            recv))
        return "trade", sym, value, t * NS_PER_MS

    def quote(self, ev: dict[str, Any], recv: bytes) -> Result | None:
        g = ev.get
        sym = ev["sym"]
        t = ev["t"]
        bp = ev["bp"]
        bs = ev["bs"]
        ap = ev["ap"]
        as_ = ev["as"]
        q = ev["q"]
        bx = g("bx")
        ax = g("ax")
        z = g("z")
        c = g("c")
        ind = g("i")
        if not (t.__class__ is int and bp.__class__ is float and ap.__class__ is float
                and bs.__class__ is int and as_.__class__ is int and q.__class__ is int):
            return None
        symb = self._symbols.get(sym) or self._sym(sym)
        if symb is None:
            return None
        if bx is None:
            bxb = NULL
        elif bx.__class__ is int:
            bxb = SOME_SMALL[bx]
        else:
            return None
        if ax is None:
            axb = NULL
        elif ax.__class__ is int:
            axb = SOME_SMALL[ax]
        else:
            return None
        if z is None:
            tape = NULL
        elif z.__class__ is int:
            tape = SOME_SMALL[z]
        else:
            return None
        if c is None:
            conds = NULL
        elif c.__class__ is int:
            conds = b"\x02" + SMALL[c] + NULL  # one item
        else:
            return None
        inds: bytes | None  # None: an item that is not a small int
        if ind is None:
            inds = NULL
        elif ind.__class__ is list:
            inds = self._ints(ind)
            if inds is None:
                return None
        else:
            return None
        n = (q << 1) ^ (q >> 63)
        high = self._high.get(n >> 14) if n >= 16384 else None
        seq = self._seq(q) if high is None else _CHUNK[n & 0x3FFF] + high
        value = b"".join((
            self._quote_header, symb, self._times.get(t) or self._time(t), NULL, NULL,
            _DD(bp, bs), bxb, _DD(ap, as_), axb, conds, inds, seq, tape, NULL, recv))
        return "quote", sym, value, t * NS_PER_MS


NativeResult = tuple[list[tuple[str, bytes, str]], int, int, int]

# what the native encoder takes beyond the fused one's shape: a fractional size ("ds"),
# integral prices and sizes, explicit nulls
NATIVE_SAMPLES: tuple[dict[str, Any], ...] = (*SAMPLES,
    {"ev": "T", "sym": "AAPL", "i": "77", "x": 4, "p": 168.66, "s": 4, "ds": "4.6856",
     "t": 1704205800001, "q": 5220000068, "z": 3, "c": None},
    {"ev": "Q", "sym": "SPY", "bx": None, "bp": 470, "bs": 1.5, "ax": 12, "ap": 470.01,
     "as": 2, "c": 1, "i": [], "t": 1704205800002, "q": 2**40, "z": None},
    {"ev": "T", "sym": "BRK/A", "i": "9", "x": 4, "p": 612000.25, "s": 1,
     "t": 1704205800003, "q": 5220000069},
)


class NativeFrames:
    """The compiled whole-frame encoder (``schemas/_native.c``) bound to this codec.

    ``encode(frame, received_ns)`` -> (records, trades, quotes, last_event_ns) where records
    are ``(topic, value, key)`` ready for ``produce`` (key: :func:`schemas.keys.symbol_key`
    of the symbol, which the samples check with a ``BRK/A``), or None when the frame is anything
    but a well-formed array of T/Q events (the caller then runs the Python path on it).
    It takes its framing from a :class:`LiveEncoder` (which derived it from the codec) and
    checks its own bytes against the codec on the sample events at start; if the module was
    not built, or any byte differs, ``enabled`` is False.
    """

    def __init__(self, live: LiveEncoder, topics: dict[str, str]) -> None:
        self.enabled = False
        self.encode: Callable[[bytes, int], NativeResult | None] = _none
        if FrameEncoder is None or not live.enabled:
            return
        try:
            encoder = FrameEncoder(live._trade_header, live._quote_header,
                                   topics["trade"], topics["quote"])
            ok = all(self._check(encoder, live, topics, received_ns)
                     for received_ns in (1, 1_795_581_905_157_190_423))
        except Exception as exc:  # any surprise means: do not use it
            log.warning("native frame encoder disabled: %s", exc)
            return
        if not ok:
            log.warning("native frame encoder disabled: its bytes differ from the codec's")
            return
        self.enabled = True
        self.encode = encoder.encode

    @staticmethod
    def _check(encoder: Any, live: LiveEncoder, topics: dict[str, str],
               received_ns: int) -> bool:
        got = encoder.encode(orjson.dumps(NATIVE_SAMPLES), received_ns)
        if got is None:
            return False
        records, trades, quotes, last_ns = got
        want = []
        for ev in NATIVE_SAMPLES:
            kind, record = record_from_ws_event(ev, received_ns)
            want.append((topics[kind], live._codec.encode(kind, record),
                         symbol_key(record["symbol"])))
        return (records == want and trades + quotes == len(NATIVE_SAMPLES)
                and last_ns == NATIVE_SAMPLES[-1]["t"] * NS_PER_MS)


def _none(frame: bytes, received_ns: int) -> None:
    return None
