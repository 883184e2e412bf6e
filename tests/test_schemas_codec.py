"""The codec: framing, fingerprints, errors, schema evolution, registry mode (no Kafka).

The registry tests run against a real Confluent-compatible registry (the
``schema_registry_url`` fixture: Apicurio Registry natively, Confluent's own image on Docker).
"""

from __future__ import annotations

import io
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from common.config import SchemaRegistryConfig
from schemas.codec import (
    KINDS,
    Codec,
    DecodeError,
    EncodeError,
    fingerprint,
    load_schema,
    make_codec,
    rabin64,
)
from schemas.registry import Registry, RegistryError
from services.process import free_port
from tests.support.registry import record_requests, registry_config, unique_prefix
from tests.support.samples import TRADE_V2, random_record, sample

DATA = Path(__file__).parent / "data" / "schemas"
TRADE_V2_BAD = json.loads((DATA / "trade_v2_incompatible.avsc").read_text())


def fastavro_body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parse_schema(schema, named_schemas={}), record)
    return out.getvalue()


@pytest.fixture(params=[True, False], ids=["fast", "fastavro"])
def codec(request: pytest.FixtureRequest) -> Codec:
    return Codec(fast=request.param)


# ------------------------------------------------------------------ fingerprints and framing
def test_rabin_matches_the_avro_spec_and_fastavro() -> None:
    assert rabin64(b'"null"') == 7195948357588979594  # the Avro spec's test vector
    for kind in KINDS:
        parsed = parse_schema(load_schema(kind), named_schemas={})
        expected = fastavro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        assert fingerprint(load_schema(kind)).hex() == expected


@pytest.mark.parametrize("kind", KINDS)
def test_single_object_roundtrip_and_bytes(codec: Codec, kind: str) -> None:
    record = sample(kind)
    data = codec.encode(kind, record)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint(load_schema(kind))
    assert data[10:] == fastavro_body(load_schema(kind), record)
    assert codec.decode(data) == (kind, record)


def test_a_fast_reader_reads_a_fastavro_writer_and_back() -> None:
    fast, slow = Codec(fast=True), Codec(fast=False)
    for kind in KINDS:
        record = sample(kind)
        assert fast.decode(slow.encode(kind, record)) == (kind, record)
        assert slow.decode(fast.encode(kind, record)) == (kind, record)


@pytest.mark.parametrize("kind", KINDS)
def test_random_records_roundtrip(codec: Codec, kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(300):
        record = random_record(rng, kind)
        data = codec.encode(kind, record)
        assert data[10:] == fastavro_body(load_schema(kind), record)
        assert codec.decode(data) == (kind, record)


# ------------------------------------------------------------------ bad input
def test_garbage_and_truncation_raise_decode_error(codec: Codec) -> None:
    data = codec.encode("trade", sample("trade"))
    bad = [b"", b"\xc3", b"\xc3\x01", b"\xc3\x01\x00\x01", b"garbage", b"\xff" * 30,
           data + b"\x00", b"\xc3\x01" + b"\x00" * 8 + data[10:]]
    bad += [data[:n] for n in range(len(data))]
    for message in bad:
        with pytest.raises(DecodeError):
            codec.decode(message)
    with pytest.raises(DecodeError, match="empty message"):
        codec.decode(None)  # type: ignore[arg-type]


def test_decode_error_messages_are_clear(codec: Codec) -> None:
    data = codec.encode("quote", sample("quote"))
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        codec.decode(b"\xc3\x01" + b"\x11" * 8 + data[10:])
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        codec.decode(data[:-3])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(data + b"\x02")
    with pytest.raises(DecodeError, match="not an Avro message"):
        codec.decode(b'{"ev":"T"}')
    with pytest.raises(DecodeError, match="no schema registry is configured"):
        codec.decode(b"\x00\x00\x00\x00\x07" + data[10:])
    assert issubclass(DecodeError, ValueError)


def test_a_corrupt_body_never_decodes_silently(codec: Codec) -> None:
    """Flipping bytes either fails cleanly or decodes to a record of the right shape."""
    data = codec.encode("trade", sample("trade"))
    rng = random.Random(7)
    for _ in range(500):
        body = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(10, len(body))] = rng.randrange(256)
        try:
            kind, record = codec.decode(bytes(body))
        except DecodeError:
            continue
        assert kind == "trade" and set(record) == set(sample("trade"))


@pytest.mark.parametrize("change", [
    {"price": "161.87"}, {"price": None}, {"exchange": 2**31}, {"exchange": 1.5},
    {"sip_timestamp_ns": 2**63}, {"sip_timestamp_ns": 1.0}, {"source": "LIVE"},
    {"conditions": None}, {"conditions": ["14"]}, {"symbol": None}, {"symbol": b"AAPL"},
    {"tape": "3"}, {"received_ns": -(2**63) - 1},
])
def test_bad_records_raise_encode_error(codec: Codec, change: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        codec.encode("trade", {**sample("trade"), **change})


def test_missing_fields(codec: Codec) -> None:
    record = sample("trade")
    del record["price"]
    with pytest.raises(EncodeError, match="price"):
        codec.encode("trade", record)
    # a field with a default may be left out: the default is written
    record = sample("trade")
    del record["conditions"], record["received_ns"]
    assert codec.decode(codec.encode("trade", record))[1] == {
        **sample("trade"), "conditions": [], "received_ns": None}


def test_unknown_kind(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="unknown kind"):
        codec.encode("trades", sample("trade"))


# ------------------------------------------------------------------ schema evolution
def test_v1_reader_reads_v2_writer_single_object() -> None:
    writer = Codec({**{k: load_schema(k) for k in KINDS}, "trade": TRADE_V2})
    record = {**sample("trade"), "exchange_mic": "XNAS"}
    data = writer.encode("trade", record)
    assert data[2:10] == fingerprint(TRADE_V2)
    assert writer.decode(data) == ("trade", record)

    v1_reader = Codec()
    with pytest.raises(DecodeError, match="unknown schema fingerprint"):
        v1_reader.decode(data)  # it has never seen v2
    v1_reader = Codec(writer_schemas=[TRADE_V2])
    assert v1_reader.decode(data) == ("trade", sample("trade"))  # exchange_mic skipped


def test_v2_reader_reads_v1_writer_with_the_default() -> None:
    v2_reader = Codec({**{k: load_schema(k) for k in KINDS}, "trade": TRADE_V2},
                      writer_schemas=[load_schema("trade")])
    data = Codec().encode("trade", sample("trade"))
    assert v2_reader.decode(data) == ("trade", {**sample("trade"), "exchange_mic": "XXXX"})


def test_a_writer_schema_of_another_record_is_refused() -> None:
    other = {"type": "record", "name": "Other", "fields": [{"name": "a", "type": "long"}]}
    with pytest.raises(DecodeError, match="none of ours"):
        Codec(writer_schemas=[other])


# ------------------------------------------------------------------ registry mode
def test_registry_mode_registers_on_first_use_with_confluent_framing(
        schema_registry_url: str) -> None:
    prefix = unique_prefix("first")
    codec = make_codec(registry_config(schema_registry_url, prefix))
    sent = record_requests(codec)
    probe = Registry(SchemaRegistryConfig(url=schema_registry_url))
    subject = f"{prefix}.trades-value"
    assert subject not in probe.client.get_subjects()
    data = codec.encode("trade", sample("trade"))
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert json.loads(probe.schema_by_id(schema_id)) == load_schema("trade")
    assert probe.client.get_versions(subject) == [1]
    assert probe.client.get_compatibility(subject) == "BACKWARD"
    assert data[5:] == fastavro_body(load_schema("trade"), sample("trade"))
    assert codec.decode(data) == ("trade", sample("trade"))
    # registered once, not per message
    for _ in range(100):
        codec.encode("trade", sample("trade"))
    assert [m for m, _ in sent] == ["PUT", "POST"]
    assert sent[1][1] == f"/subjects/{subject}/versions"


def test_registry_readers_fetch_once_and_accept_both_formats(schema_registry_url: str) -> None:
    prefix = unique_prefix("readers")
    writer = make_codec(registry_config(schema_registry_url, prefix))
    reader = make_codec(registry_config(schema_registry_url, prefix))
    sent = record_requests(reader)
    framed = {kind: writer.encode(kind, sample(kind)) for kind in KINDS}
    for _ in range(3):
        for kind in KINDS:
            assert reader.decode(framed[kind]) == (kind, sample(kind))
    gets = [p for m, p in sent if m == "GET" and p.startswith("/schemas/ids")]
    assert len(gets) == 3
    # the same reader also reads single-object messages written without a registry
    plain = Codec().encode("quote", sample("quote"))
    assert reader.decode(plain) == ("quote", sample("quote"))
    # and a registry-free reader that knows nothing of ids refuses clearly
    with pytest.raises(DecodeError, match="schema id"):
        Codec().decode(framed["bar"])


def test_registry_unknown_id_is_a_decode_error(schema_registry_url: str) -> None:
    reader = make_codec(registry_config(schema_registry_url, unique_prefix("unknown")))
    sent = record_requests(reader)
    body = fastavro_body(load_schema("trade"), sample("trade"))
    for _ in range(2):
        with pytest.raises(DecodeError, match="unknown schema id 424242"):
            reader.decode(b"\x00" + (424242).to_bytes(4, "big") + body)
    assert sent == [("GET", "/schemas/ids/424242")]  # remembered


def test_registry_unreachable_is_not_a_decode_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    reader = make_codec(registry_config(url, timeout_s=2))
    body = fastavro_body(load_schema("trade"), sample("trade"))
    with pytest.raises(RegistryError, match="unreachable"):
        reader.decode(b"\x00\x00\x00\x00\x01" + body)
    with pytest.raises(RegistryError, match="unreachable"):
        reader.encode("trade", sample("trade"))


class _NotARegistry(BaseHTTPRequestHandler):
    """Answers 200 with a page (a proxy, say), or JSON without the expected fields."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        html = self.path.startswith("/schemas/ids/1")
        body = b"<html>maintenance</html>" if html else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = _answer


@pytest.mark.parametrize("schema_id", [1, 2], ids=["html", "json-without-schema"])
def test_registry_nonsense_answer_is_a_registry_error(schema_id: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotARegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        reader = make_codec(registry_config(f"http://127.0.0.1:{server.server_port}"))
        body = fastavro_body(load_schema("trade"), sample("trade"))
        with pytest.raises(RegistryError, match="reply"):
            reader.decode(b"\x00" + schema_id.to_bytes(4, "big") + body)
        with pytest.raises(RegistryError, match="reply"):
            reader.encode("trade", sample("trade"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_registry_schema_evolution(schema_registry_url: str) -> None:
    prefix = unique_prefix("evo")
    config = registry_config(schema_registry_url, prefix)
    v1_writer = make_codec(config)
    v1_data = v1_writer.encode("trade", sample("trade"))
    subjects = {"trade": f"{prefix}.trades-value"}
    v2_writer = Codec({"trade": TRADE_V2}, registry=Registry(config.schema_registry),
                      subjects=subjects)
    v2_record = {**sample("trade"), "exchange_mic": "XNAS"}
    v2_data = v2_writer.encode("trade", v2_record)
    assert v2_data[1:5] != v1_data[1:5]
    probe = Registry(config.schema_registry)
    assert probe.client.get_versions(f"{prefix}.trades-value") == [1, 2]

    v1_reader = make_codec(config)
    assert v1_reader.decode(v2_data) == ("trade", sample("trade"))
    assert v1_reader.decode(v1_data) == ("trade", sample("trade"))
    v2_reader = Codec({"trade": TRADE_V2}, registry=Registry(config.schema_registry),
                      subjects=subjects)
    assert v2_reader.decode(v1_data) == ("trade", {**sample("trade"), "exchange_mic": "XXXX"})
    assert v2_reader.decode(v2_data) == ("trade", v2_record)

    # a v3 that adds a field without a default cannot be registered under BACKWARD
    bad_writer = Codec({"trade": TRADE_V2_BAD}, registry=Registry(config.schema_registry),
                       subjects=subjects)
    with pytest.raises(RegistryError, match="409"):
        bad_writer.encode("trade", {**sample("trade"), "venue": "XNAS"})
    assert probe.client.get_versions(f"{prefix}.trades-value") == [1, 2]


def test_bound_encoder_equals_encode(codec: Codec) -> None:
    for kind in KINDS:
        encode = codec.encoder(kind)
        assert encode is codec.encoder(kind)  # built once
        assert encode(sample(kind)) == codec.encode(kind, sample(kind))
        with pytest.raises(EncodeError):
            encode({**sample(kind), "symbol": None})
    with pytest.raises(EncodeError, match="unknown kind"):
        codec.encoder("trades")


def test_bound_encoder_registers_lazily(schema_registry_url: str) -> None:
    codec = make_codec(registry_config(schema_registry_url, unique_prefix("bound")))
    sent = record_requests(codec)
    encode = codec.encoder("quote")
    assert [m for m, _ in sent] == ["PUT", "POST"] and "quotes-value" in sent[1][1]
    data = encode(sample("quote"))
    assert data[0] == 0 and codec.decode(data) == ("quote", sample("quote"))


def test_golden_wire_bytes() -> None:
    """The bytes on the topics must not change by accident (fixture written by fastavro)."""
    lines = (DATA / "golden.jsonl").read_text().splitlines()
    assert len(lines) == len(KINDS)
    for line in lines:
        case = json.loads(line)
        for codec in (Codec(), Codec(fast=False)):
            assert codec.encode(case["kind"], case["record"]).hex() == case["single_object_hex"]
            assert codec.decode(bytes.fromhex(case["single_object_hex"])) == \
                (case["kind"], case["record"])
