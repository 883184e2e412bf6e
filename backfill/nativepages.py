"""The compiled page encoder (``schemas._native.Encoder``) bound to a codec: the JSON bytes
of a REST page (``/v3/trades``, ``/v3/quotes``, ``/v2/aggs``) -> framed Avro records in one
pass, with the rest of the page (``status``, ``next_url``, ``count``...) read as usual.

``decoder(kind, symbol, timeframe)`` gives what :meth:`backfill.client.MassiveRestClient.pages`
takes as ``decode``: body -> an :class:`EncodedPage` (the page without its results, and
their records in order) or None, and the client then decodes the body as JSON and the
engine maps it through the reference path (``backfill.mapping`` + the codec), which gives
the same bytes or a dead letter for a bad result. The native path takes a page only when
it can take every result in it exactly.

The programs are compiled from the spec (``schemas.program``); the framing comes from the
codec. At start each kind is checked against the reference on sample pages; a kind that
cannot be compiled or differs by a byte stays on the reference path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from backfill.mapping import record_from_rest
from common.timeframes import TimeframeError, parse_timeframe
from schemas.native import native
from schemas.program import header_of, page_programs
from schemas.spec import Kind, spec

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000

# Per kind, results the encoder must take: odd but valid shapes (a decimal size, a lone
# condition, a one-sided quote, missing optional keys, integral prices) and big numbers.
SAMPLES: dict[Kind, list[dict[str, Any]]] = {
    Kind.TRADE: [
        {"conditions": [12, 37], "correction": 1, "exchange": 11, "id": "183276",
         "participant_timestamp": 1651181822461636600, "price": 156.43,
         "sequence_number": 7179341, "sip_timestamp": 1651181822461979400, "size": 10,
         "tape": 3, "trf_id": 3, "trf_timestamp": 1651181557090806500},
        {"exchange": 4, "id": "x1", "price": 612000, "sequence_number": 2**40,
         "sip_timestamp": 1704205800000000001, "size": 1, "decimal_size": "0.5",
         "conditions": 14},
    ],
    Kind.QUOTE: [
        {"ask_exchange": 11, "ask_price": 156.5, "ask_size": 300, "bid_exchange": 12,
         "bid_price": 156.43, "bid_size": 100, "conditions": [1], "indicators": [604, 1],
         "participant_timestamp": 1651181822461636600, "sequence_number": 7179341,
         "sip_timestamp": 1651181822461979400, "tape": 3},
        {"ask_price": 10, "ask_size": 1.5, "sequence_number": 1, "conditions": 2,
         "sip_timestamp": 1704205800000000001},
    ],
    Kind.BAR: [
        {"v": 642646396.0, "vw": 1.469, "o": 1.5032, "c": 1.4604, "h": 1.5064, "l": 1.4489,
         "t": 1704205800000, "n": 82132},
        {"v": 3, "o": 1, "c": 1.25, "h": 1.5, "l": 1, "t": 1704205860000, "otc": True},
    ],
}
_SAMPLE_SYMBOLS = ("AAPL", "BRK/A")
_SAMPLE_TIMEFRAME = "1Min"


class EncodedPage(dict[str, Any]):
    """A REST page as the client returns it, its ``results`` None (the JSON is not
    decoded), with ``records``: the framed Avro records of its results, in order, and
    ``cpu_s``: the CPU seconds it took."""

    records: list[bytes]
    cpu_s: float = 0.0


def bar_ns(timeframe: str | None) -> int | None:
    """The width of a bar of ``timeframe`` in ns; None for day bars, whose end follows the
    market's calendar (the reference path computes it)."""
    if timeframe is None:
        return None
    try:
        tf = parse_timeframe(timeframe)
    except TimeframeError:
        return None
    return None if tf.calendar else tf.seconds * NS_PER_S


class NativePages:
    """See the module docstring."""

    def __init__(self, codec: Any) -> None:
        self._encoder: Any = None
        self._index: dict[Kind, int] = {}
        if native is None:
            return
        kinds: list[Kind] = []
        headers = {}
        for kind in Kind:
            try:
                record = record_from_rest(kind, SAMPLES[kind][0], "AAPL", _SAMPLE_TIMEFRAME)
                headers[kind] = header_of(codec, spec(kind), record)
                compiled = page_programs([spec(kind)], headers)
                encoder = native.Encoder(compiled.keys, compiled.tag_key, compiled.programs)
                ok = _check(encoder, codec, kind)
            except Exception as exc:  # any surprise (Unsupported...) means: do not use it
                log.warning("native page encoder: %s pages take the reference path (%s)",
                            kind, exc)
                continue
            if not ok:
                log.warning("native page encoder: %s pages take the reference path (its "
                            "bytes differ from the codec's)", kind)
                continue
            kinds.append(kind)
        if not kinds:
            return
        compiled = page_programs([spec(k) for k in kinds], headers)
        self._encoder = native.Encoder(compiled.keys, compiled.tag_key, compiled.programs)
        self._index = {k: i for i, k in enumerate(compiled.kinds)}

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return tuple(self._index)

    def decoder(self, kind: str, symbol: str, timeframe: str | None = None,
                ) -> Callable[[bytes], EncodedPage | None] | None:
        """The page decoder of one request, or None when its pages take the reference
        path (no build, a kind left out, a day bar)."""
        index = self._index.get(Kind.of(kind))
        if index is None:
            return None
        width = bar_ns(timeframe) if kind == Kind.BAR else None
        if kind == Kind.BAR and width is None:
            return None
        params = (symbol, timeframe, width)
        encode_page = self._encoder.encode_page

        def decode(body: bytes) -> EncodedPage | None:
            started = time.thread_time()
            page = _page(encode_page(body, index, params), body)
            if page is not None:
                page.cpu_s = time.thread_time() - started
            return page
        return decode


def _page(out: tuple[list[bytes], int, int] | None, body: bytes) -> EncodedPage | None:
    if out is None:
        return None
    values, start, end = out
    try:
        rest = orjson.loads(body[:start] + b"null" + body[end:] if start >= 0 else body)
    except orjson.JSONDecodeError:
        return None
    if type(rest) is not dict:
        return None
    page = EncodedPage(rest)
    page.records = values
    return page


def _check(encoder: Any, codec: Any, kind: Kind) -> bool:
    results = SAMPLES[kind]
    body = orjson.dumps({"results": results, "status": "OK", "next_url": "http://x/y?c=1"})
    for symbol in _SAMPLE_SYMBOLS:
        width = bar_ns(_SAMPLE_TIMEFRAME) if kind == Kind.BAR else None
        page = _page(encoder.encode_page(body, 0, (symbol, _SAMPLE_TIMEFRAME, width)), body)
        want = [codec.encode(kind.value, record_from_rest(kind, r, symbol, _SAMPLE_TIMEFRAME))
                for r in results]
        if page is None or page.records != want or page != {"results": None, "status": "OK",
                                                           "next_url": "http://x/y?c=1"}:
            return False
    return True
