"""The generated encoders/decoders are byte-for-byte fastavro (property-style, random records)."""

from __future__ import annotations

import io
import math
import random
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema

from schemas import fastpath
from schemas.codec import KINDS, Codec, load_schema
from tests.support.samples import LONG_MAX, LONG_MIN, random_record, sample

# Everything the generator supports, beyond what our three schemas use.
WIDE_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Everything", "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "f32", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "maybe_blob", "type": ["null", "bytes"]},
        {"name": "maybe_text_last", "type": ["string", "null"]},
        {"name": "color", "type": {"type": "enum", "name": "Color",
                                   "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "colors", "type": {"type": "array", "items": "test.Color"}},
        {"name": "texts", "type": {"type": "array", "items": "string"}},
        {"name": "longs", "type": {"type": "array", "items": "long"}},
        {"name": "doubles", "type": {"type": "array", "items": "double"}},
        {"name": "x_ns", "type": "long"},
        {"name": "maybe_x_ns", "type": ["null", "long"]},
        {"name": "nothing", "type": "null"},
        {"name": "d1", "type": "double"}, {"name": "f2", "type": "float"},
        {"name": "d3", "type": "double"},
    ]}


def _expanded(schema: dict[str, Any]) -> dict[str, Any]:
    """``WIDE_SCHEMA`` with the named enum reference written out (for random_record)."""
    fields = []
    color = schema["fields"][5]["type"]
    for f in schema["fields"]:
        if f["name"] == "colors":
            f = {**f, "type": {"type": "array", "items": color}}
        fields.append(f)
    return {**schema, "fields": fields}


def fastavro_body(parsed: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


@pytest.mark.parametrize("kind", KINDS)
def test_random_records_equal_fastavro(kind: str) -> None:
    schema = load_schema(kind)
    parsed = parse_schema(schema, named_schemas={})
    encode = fastpath.compile_encoder(schema)
    decode = fastpath.compile_decoder(schema)
    assert encode is not None and decode is not None
    rng = random.Random(f"fastpath-{kind}")
    codec = Codec()
    fast = 0
    for _ in range(3000):
        record = random_record(rng, kind)
        expected = fastavro_body(parsed, record)
        try:
            got = encode(record)
            fast += 1
        except KeyError:  # an int beyond the small table or a very long string
            assert beyond_tables(schema, record), record
            got = codec.encode(kind, record)[10:]  # the reference path
        assert got == expected, record
        assert decode(expected, 0) == (record, len(expected))
        # at an offset inside a larger buffer too
        assert decode(b"xyz" + expected + b"tail", 3) == (record, 3 + len(expected))
    assert fast > 1500  # most random records take the fast path


def beyond_tables(schema: dict[str, Any], record: dict[str, Any]) -> bool:
    """True if some int value is outside the fast path's table or a string is very long."""
    def ints(t: Any, v: Any) -> list[int]:
        if t == "int":
            return [v]
        if isinstance(t, list) and v is not None:
            return ints(next(b for b in t if b != "null"), v)
        if isinstance(t, dict) and t.get("type") == "array":
            return [x for item in v for x in ints(t["items"], item)]
        return []
    values = [x for f in schema["fields"] for x in ints(f["type"], record[f["name"]])]
    return any(not -8192 <= x < 8192 for x in values) or any(
        isinstance(v, str) and len(v.encode()) >= 8192 for v in record.values())


def test_extremes_and_edge_values() -> None:
    schema = load_schema("trade")
    parsed = parse_schema(schema, named_schemas={})
    encode, decode = fastpath.compile_encoder(schema), fastpath.compile_decoder(schema)
    assert encode is not None and decode is not None
    base = sample("trade")
    cases = [
        {"sip_timestamp_ns": LONG_MIN, "received_ns": LONG_MAX},
        {"sip_timestamp_ns": 0, "participant_timestamp_ns": -1, "trf_timestamp_ns": 2**56},
        {"sip_timestamp_ns": 2**56 - 1, "received_ns": -(2**55)},
        {"exchange": -(2**31), "tape": 2**31 - 1, "trf_id": 8191, "correction": -8193},
        {"conditions": list(range(-70, 70)), "symbol": "", "id": "é€😀" * 50},
        {"symbol": "x" * 9000},  # longer than the length table: fastavro path
        {"price": float("inf"), "size": -0.0},
    ]
    codec = Codec()
    for change in cases:
        record = {**base, **change}
        expected = fastavro_body(parsed, record)
        try:
            assert encode(record) == expected, change
        except KeyError:  # beyond the tables: the codec's reference path writes it
            assert beyond_tables(schema, record)
        assert codec.encode("trade", record)[10:] == expected
        assert decode(expected, 0) == (record, len(expected))


def test_every_supported_type_equals_fastavro() -> None:
    parsed = parse_schema(WIDE_SCHEMA, named_schemas={})
    encode = fastpath.compile_encoder(WIDE_SCHEMA)
    decode = fastpath.compile_decoder(WIDE_SCHEMA)
    assert encode is not None and decode is not None
    rng = random.Random(3)
    expanded = _expanded(WIDE_SCHEMA)
    for _ in range(2000):
        record = random_record(rng, expanded)
        record["maybe_text_last"] = rng.choice([None, "abc", ""])
        expected = fastavro_body(parsed, record)
        assert encode(record) == expected, record
        got, end = decode(expected, 0)
        assert end == len(expected)
        assert got == fastavro.schemaless_reader(io.BytesIO(expected), parsed, None)


def test_out_of_scope_schemas_fall_back() -> None:
    nested = {"type": "record", "name": "N", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "I",
                                   "fields": [{"name": "a", "type": "long"}]}}]}
    three_way = {"type": "record", "name": "U", "fields": [
        {"name": "u", "type": ["null", "long", "string"]}]}
    a_map = {"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "long"}}]}
    for schema in (nested, three_way, a_map, {"type": "array", "items": "long"}):
        assert fastpath.compile_encoder(schema) is None
        assert fastpath.compile_decoder(schema) is None


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, 1.0, "1", None])
def test_encode_long_refuses_what_is_not_a_long(value: Any) -> None:
    with pytest.raises((OverflowError, TypeError)):
        fastpath.encode_long(value)


def test_wide_decoder_rejects_overlong_and_truncated_varints() -> None:
    schema = load_schema("trade")
    decode = fastpath.compile_decoder(schema)
    assert decode is not None
    symbol = b"\x08AAPL"
    for bad in (b"\xff" * 11, b"\xff" * 9 + b"\x7f", b"\x80\x80\x80"):
        with pytest.raises((ValueError, IndexError)):
            decode(symbol + bad, 0)


def test_a_record_without_fields() -> None:
    empty = {"type": "record", "name": "Empty", "fields": []}
    encode, decode = fastpath.compile_encoder(empty), fastpath.compile_decoder(empty)
    framed = fastpath.compile_encoder(empty, prefix=b"\xc3\x01")
    assert encode is not None and decode is not None and framed is not None
    assert encode({}) == b"" and framed({}) == b"\xc3\x01" and decode(b"", 0) == ({}, 0)


def test_a_nan_quote_price_equals_fastavro() -> None:
    """A one-sided quote's empty side is NaN: the same bytes as fastavro, NaN back."""
    schema = load_schema("quote")
    parsed = parse_schema(schema, named_schemas={})
    encode, decode = fastpath.compile_encoder(schema), fastpath.compile_decoder(schema)
    assert encode is not None and decode is not None
    for side in ("bid", "ask"):
        record = {**sample("quote"), f"{side}_price": float("nan"), f"{side}_size": 0.0}
        expected = fastavro_body(parsed, record)
        assert encode(record) == expected
        assert Codec().encode("quote", record)[10:] == expected
        decoded, end = decode(expected, 0)
        assert end == len(expected) and math.isnan(decoded[f"{side}_price"])
        assert comparable_nan(decoded) == comparable_nan(record)


def comparable_nan(record: dict[str, Any]) -> dict[str, Any]:
    return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v
            for k, v in record.items()}
