"""schemas.spec: the specification read from the .avsc annotations reproduces the field
lists, source keys and MarketStore columns the mappings and buckets were written with."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from schemas.codec import fingerprint, load_schema
from schemas.spec import SCHEMA_DIR, Kind, SpecError, load_spec, load_specs, spec

# Today's mappings, written out once: field -> (ws rule, ws keys, ws scale, rest rule, rest keys)
MS = 1_000_000
EXPECTED = {
    Kind.BAR: {
        "symbol": ("required", ("sym",), 1, "request", ("ticker",)),
        "timeframe": ("constant", (), 1, "request", ("timeframe",)),
        "start_ns": ("required", ("s",), MS, "required", ("t",)),
        "end_ns": ("required", ("e",), MS, "bar_end", ()),
        "open": ("required", ("o",), 1, "required", ("o",)),
        "high": ("required", ("h",), 1, "required", ("h",)),
        "low": ("required", ("l",), 1, "required", ("l",)),
        "close": ("required", ("c",), 1, "required", ("c",)),
        "volume": ("decimal", ("dv", "v"), 1, "required", ("v",)),
        "vwap": ("optional", ("vw",), 1, "optional", ("vw",)),
        "trades": ("constant", (), 1, "optional", ("n",)),
        "accumulated_volume": ("decimal", ("dav", "av"), 1, "constant", ()),
        "official_open": ("optional", ("op",), 1, "constant", ()),
        "day_vwap": ("optional", ("a",), 1, "constant", ()),
        "average_trade_size": ("optional", ("z",), 1, "constant", ()),
        "otc": ("optional", ("otc",), 1, "optional", ("otc",)),
        "source": ("constant", (), 1, "constant", ()),
        "received_ns": ("received", (), 1, "constant", ()),
    },
    Kind.TRADE: {
        "symbol": ("required", ("sym",), 1, "request", ("ticker",)),
        "sip_timestamp_ns": ("required", ("t",), MS, "required", ("sip_timestamp",)),
        "participant_timestamp_ns": ("constant", (), 1, "optional", ("participant_timestamp",)),
        "trf_timestamp_ns": ("optional", ("trft",), MS, "optional", ("trf_timestamp",)),
        "price": ("required", ("p",), 1, "required", ("price",)),
        "size": ("decimal", ("ds", "s"), 1, "decimal", ("decimal_size", "size")),
        "exchange": ("required", ("x",), 1, "required", ("exchange",)),
        "tape": ("optional", ("z",), 1, "optional", ("tape",)),
        "conditions": ("optional", ("c",), 1, "one_or_many", ("conditions",)),
        "id": ("required", ("i",), 1, "required", ("id",)),
        "sequence_number": ("required", ("q",), 1, "required", ("sequence_number",)),
        "trf_id": ("optional", ("trfi",), 1, "optional", ("trf_id",)),
        "correction": ("constant", (), 1, "optional", ("correction",)),
        "source": ("constant", (), 1, "constant", ()),
        "received_ns": ("received", (), 1, "constant", ()),
    },
    Kind.QUOTE: {
        "symbol": ("required", ("sym",), 1, "request", ("ticker",)),
        "sip_timestamp_ns": ("required", ("t",), MS, "required", ("sip_timestamp",)),
        "participant_timestamp_ns": ("constant", (), 1, "optional", ("participant_timestamp",)),
        "trf_timestamp_ns": ("constant", (), 1, "optional", ("trf_timestamp",)),
        "bid_price": ("optional", ("bp",), 1, "optional", ("bid_price",)),
        "bid_size": ("optional", ("bs",), 1, "optional", ("bid_size",)),
        "bid_exchange": ("optional", ("bx",), 1, "optional", ("bid_exchange",)),
        "ask_price": ("optional", ("ap",), 1, "optional", ("ask_price",)),
        "ask_size": ("optional", ("as",), 1, "optional", ("ask_size",)),
        "ask_exchange": ("optional", ("ax",), 1, "optional", ("ask_exchange",)),
        "conditions": ("one_or_many", ("c",), 1, "one_or_many", ("conditions",)),
        "indicators": ("optional", ("i",), 1, "one_or_many", ("indicators",)),
        "sequence_number": ("required", ("q",), 1, "required", ("sequence_number",)),
        "tape": ("optional", ("z",), 1, "optional", ("tape",)),
        "source": ("constant", (), 1, "constant", ()),
        "received_ns": ("received", (), 1, "constant", ()),
    },
}

# The MarketStore row layouts of the buckets written so far (they must not move).
DTYPES = {
    Kind.BAR: np.dtype([
        ("Epoch", "<i8"), ("Open", "<f8"), ("High", "<f8"), ("Low", "<f8"), ("Close", "<f8"),
        ("Volume", "<f8"), ("VWAP", "<f8"), ("Trades", "<i8"), ("AccumulatedVolume", "<f8"),
        ("OfficialOpen", "<f8"), ("DayVWAP", "<f8"), ("AverageTradeSize", "<f8"),
        ("OTC", "<i1"), ("Source", "<i1"), ("StartNs", "<i8"), ("EndNs", "<i8"),
    ]),
    Kind.TRADE: np.dtype([
        ("Epoch", "<i8"), ("Nanoseconds", "<i4"), ("Price", "<f8"), ("Size", "<f8"),
        ("Exchange", "<i4"), ("Tape", "<i4"), ("Conditions", "<i8"), ("SequenceNumber", "<i8"),
        ("TrfId", "<i4"), ("Correction", "<i4"), ("SipTimestamp", "<i8"),
        ("ParticipantTimestamp", "<i8"), ("TrfTimestamp", "<i8"),
    ]),
    Kind.QUOTE: np.dtype([
        ("Epoch", "<i8"), ("Nanoseconds", "<i4"), ("BidPrice", "<f8"), ("AskPrice", "<f8"),
        ("BidSize", "<f8"), ("AskSize", "<f8"), ("BidExchange", "<i4"), ("AskExchange", "<i4"),
        ("Conditions", "<i8"), ("Indicators", "<i8"), ("SequenceNumber", "<i8"), ("Tape", "<i4"),
        ("SipTimestamp", "<i8"), ("ParticipantTimestamp", "<i8"), ("TrfTimestamp", "<i8"),
    ]),
}

# Fingerprints of the schemas before they were annotated: the annotations must not move them.
FINGERPRINTS = {Kind.BAR: "0b855879baaf7db0", Kind.TRADE: "b4b975a7a55a4d9c",
                Kind.QUOTE: "b02f9a303d349ccd"}


def test_kind_carries_its_names() -> None:
    assert [(k.value, k.data_type, k.ev, k.attr_group, k.topic, k.avsc, k.variable)
            for k in Kind] == [
        ("bar", "bars", "AM", "OHLCV", "bars", "bar.avsc", False),
        ("trade", "trades", "T", "TRADE", "trades", "trade.avsc", True),
        ("quote", "quotes", "Q", "QUOTE", "quotes", "quote.avsc", True),
    ]
    assert Kind.TRADE == "trade" and {"trade": 1}[Kind.TRADE] == 1 and f"{Kind.QUOTE}" == "quote"
    assert Kind.of_ev("Q") is Kind.QUOTE and Kind.of_data_type("bars") is Kind.BAR
    assert Kind.of("trade") is Kind.TRADE
    with pytest.raises(KeyError):
        Kind.of_ev("XT")
    with pytest.raises(ValueError, match=r"unknown kind 'trades' \(known: bar, trade, quote\)"):
        Kind.of("trades")


@pytest.mark.parametrize("kind", list(Kind))
def test_spec_reproduces_todays_fields_and_keys(kind: Kind) -> None:
    s = spec(kind)
    assert s.names == tuple(f["name"] for f in load_schema(kind)["fields"])
    got = {f.name: (f.ws.rule, f.ws.keys, f.ws.scale, f.rest.rule, f.rest.keys)
           for f in s.fields}
    assert got == EXPECTED[kind]


@pytest.mark.parametrize("kind", list(Kind))
def test_spec_reproduces_todays_columns(kind: Kind) -> None:
    assert spec(kind).dtype == DTYPES[kind]


def test_constants_and_absent_values() -> None:
    bar, trade, quote = (spec(k) for k in Kind)
    assert bar.field("timeframe").ws.value == "1Min"
    assert [s.field("source").ws.value for s in (bar, trade, quote)] == ["live"] * 3
    assert [s.field("source").rest.value for s in (bar, trade, quote)] == ["backfill"] * 3
    assert bar.field("otc").ws.absent is False and bar.field("otc").rest.absent is False
    assert math.isnan(quote.field("bid_price").ws.absent)
    assert quote.field("ask_size").rest.absent == 0.0
    assert trade.field("conditions").ws.absent == [] == quote.field("indicators").rest.absent
    assert trade.field("tape").columns[0].absent == -1
    assert math.isnan(bar.field("vwap").columns[0].absent)  # type: ignore[arg-type]
    assert trade.field("exchange").columns[0].absent is None  # required in the row


@pytest.mark.parametrize("kind", list(Kind))
def test_annotations_leave_the_fingerprint_alone(kind: Kind) -> None:
    assert fingerprint(load_schema(kind)).hex() == FINGERPRINTS[kind]


def _copy(tmp_path: Path) -> Path:
    for kind in Kind:
        shutil.copy(SCHEMA_DIR / kind.avsc, tmp_path / kind.avsc)
    return tmp_path


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


def test_loads_from_a_schema_directory(tmp_path: Path) -> None:
    specs = load_specs(_copy(tmp_path))
    assert {k: s.names for k, s in specs.items()} == {k: spec(k).names for k in Kind}


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s["fields"][0].pop("massive"), r"trade.avsc field 'symbol': needs a \"massive\""),
    (lambda s: s["fields"][4]["massive"]["ws"].update(rule="guess"),
     r"field 'price' ws: rule 'guess' is none of"),
    (lambda s: s["fields"][4]["massive"]["rest"].pop("keys"),
     r"field 'price' rest: rule 'required' needs keys"),
    (lambda s: s["fields"][4]["massive"]["columns"][0].update(check="positive"),
     r"column Price: check 'positive' is none of"),
    (lambda s: s["massive"]["layout"].append("Nope"), r"layout names no field's column: Nope"),
])
def test_bad_annotations_are_named(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    _copy(tmp_path)
    _edit(tmp_path / "trade.avsc", change)
    with pytest.raises(SpecError, match=message):
        load_spec(Kind.TRADE, tmp_path)


NEW_FIELD = {
    "name": "venue_flags", "type": ["null", "int"], "default": None,
    "doc": "A field added in a test: nothing but this annotation names it.",
    "massive": {"ws": {"rule": "optional", "keys": ["vf"]},
                "rest": {"rule": "optional", "keys": ["venue_flags"]},
                "columns": [{"name": "VenueFlags", "dtype": "<i4", "check": "id32",
                             "absent": -1}]},
}
WS_TRADE = {"ev": "T", "sym": "AAPL", "i": "5096", "x": 10, "p": 161.87, "s": 300,
            "c": [14, 41], "t": 1651684192462, "q": 4009402, "z": 3}
REST_TRADE = {"conditions": [12, 37], "exchange": 11, "id": "183276", "price": 156.43,
              "sequence_number": 7179341, "sip_timestamp": 1651181822461979400, "size": 10,
              "tape": 3}


def test_adding_a_field_to_trades_is_a_change_to_the_avsc_only(tmp_path: Path) -> None:
    """One annotated field in a copy of trade.avsc reaches the WebSocket and REST mappings,
    their validation, the bucket layout and its validation, and the batch decode."""
    from backfill.mapping import rest_mapper
    from consumer import buckets, columns
    from consumer.buckets import RecordError
    from producer.mapping import MappingError, WsMapping
    from schemas.codec import Codec

    _copy(tmp_path)
    _edit(tmp_path / "trade.avsc", lambda s: s["fields"].append(NEW_FIELD))
    specs = load_specs(tmp_path)
    trade = specs[Kind.TRADE]
    assert trade.names[-1] == "venue_flags" and spec(Kind.TRADE).names[-1] == "received_ns"

    # the mappings, and their validation
    ws = WsMapping(specs)
    kind, live = ws.record({**WS_TRADE, "vf": 7}, 1)
    assert kind == Kind.TRADE and live["venue_flags"] == 7
    assert ws.record(WS_TRADE, 1)[1]["venue_flags"] is None
    with pytest.raises(MappingError, match="'T' event: field 'vf' must be an integer"):
        ws.record({**WS_TRADE, "vf": "7"}, 1)
    backfilled = rest_mapper(trade)({**REST_TRADE, "venue_flags": 9}, "AAPL", None)
    assert backfilled["venue_flags"] == 9 and backfilled["source"] == "backfill"
    assert rest_mapper(trade)(REST_TRADE, "AAPL", None)["venue_flags"] is None

    # the bucket layout and its validation
    assert trade.dtype.names == (*DTYPES[Kind.TRADE].names, "VenueFlags")
    assert buckets.DTYPES["TRADE"] == DTYPES[Kind.TRADE]  # the package's own is unchanged
    rows = []
    for record in (live, backfilled, {**live, "venue_flags": None}):
        _, row = buckets.to_row(Kind.TRADE, record, trade)
        rows.append(row)
    stored = buckets.rows_to_array("TRADE", rows, trade.dtype)
    assert stored["VenueFlags"].tolist() == [7, 9, -1]
    with pytest.raises(RecordError, match="venue_flags -5 is not a non-negative 32-bit"):
        buckets.to_row(Kind.TRADE, {**live, "venue_flags": -5}, trade)

    # the batch decode, and the vectorised rows built from it
    codec = Codec({k: s.schema for k, s in specs.items()})
    messages = [codec.encode(Kind.TRADE, r)
                for r in (live, backfilled, {**live, "venue_flags": None})]
    decoded = codec.decode_batch(messages)
    assert not decoded.errors and not decoded.records
    cols = decoded.columns[Kind.TRADE]
    assert cols["venue_flags"].tolist() == [7, 9, None]
    built, _, ok = columns.build(Kind.TRADE, cols, columns.BucketIds(), trade)
    assert ok.all() and built["VenueFlags"].tolist() == [7, 9, -1]
    assert built.tobytes() == stored.tobytes()


def test_an_added_field_reaches_the_native_encoders_too(tmp_path: Path) -> None:
    """The compiled encoders' field programs (schemas.program, h-native's) come from the
    same spec: the field added to a copy of trade.avsc is written byte for byte as the
    reference (mapping + codec) writes it, from WebSocket frames and from REST pages."""
    program = pytest.importorskip("schemas.program", reason="the native programs are not here")
    from schemas.native import native
    if native is None or not hasattr(native, "Encoder"):
        pytest.skip("the compiled module with its Encoder is not built")
    import orjson

    from backfill.mapping import rest_mapper
    from producer.mapping import WsMapping
    from schemas.codec import Codec

    _copy(tmp_path)
    _edit(tmp_path / "trade.avsc", lambda s: s["fields"].append(NEW_FIELD))
    specs = load_specs(tmp_path)
    trade = specs[Kind.TRADE]
    codec = Codec({k: s.schema for k, s in specs.items()})
    ws = WsMapping(specs)
    events = [{**WS_TRADE, "vf": 7}, WS_TRADE, {**WS_TRADE, "vf": None}]
    header = program.header_of(codec, trade, ws.record(events[0], 1)[1])

    frames = program.frame_programs([trade], {Kind.TRADE: header}, {Kind.TRADE: "trades"})
    encoder = native.Encoder(frames.keys, frames.tag_key, frames.programs)
    records, _, _ = encoder.encode_frame(orjson.dumps(events), (1,))
    assert [value for _, value, _ in records] == \
        [codec.encode(Kind.TRADE, ws.record(ev, 1)[1]) for ev in events]
    assert [codec.decode(value)[1]["venue_flags"] for _, value, _ in records] == [7, None, None]

    results = [{**REST_TRADE, "venue_flags": 9}, REST_TRADE]
    pages = program.page_programs([trade], {Kind.TRADE: header})
    encoder = native.Encoder(pages.keys, pages.tag_key, pages.programs)
    out = encoder.encode_page(orjson.dumps({"results": results, "status": "OK"}), 0,
                              ("AAPL", None, None))
    mapper = rest_mapper(trade)
    assert out is not None
    assert out[0] == [codec.encode(Kind.TRADE, mapper(r, "AAPL", None)) for r in results]
