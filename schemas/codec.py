"""Encode and decode bar/trade/quote records: the one codec every writer and reader uses.

Wire formats (a reader accepts both at once, whatever it writes):

- no registry: Avro single-object encoding, ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing Canonical Form + the body;
- with ``schema_registry.url``: Confluent wire format, ``00`` + 4-byte big-endian schema id
  + the body. Each kind's schema is registered (on first encode) under the subject
  ``<topic>-value`` (TopicNameStrategy) with BACKWARD compatibility set on the subject.

Decoding resolves the writer schema to our reader schema (Avro schema resolution), so a
reader keeps working when writers move to a newer or older compatible schema. The writer
schema comes from the fingerprint (our own schemas plus any ``writer_schemas`` given) or,
for an id, from the registry (cached). Anything that cannot be decoded raises
:class:`DecodeError` (the consumer routes those messages to the dead-letter topic); a
registry that cannot be reached raises :class:`schemas.registry.RegistryError` instead,
because that is not the message's fault and must be retried.

Speed: when the writer schema is exactly ours (the normal case) the body goes through a
schema-specialised encoder/decoder generated at import (``schemas.fastpath``), which is
byte-for-byte equal to fastavro's; fastavro remains the reference, the validator for records
the fast path refuses, and the resolver for writer schemas that differ from ours.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
import fastavro.validation
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas.registry import Registry, RegistryError, UnknownSchemaId
from schemas.spec import Kind, read_schema

if TYPE_CHECKING:
    from common.config import Config
    from schemas.batch import BatchResult, ColumnDecoder

__all__ = [
    "KINDS",
    "Codec",
    "DecodeError",
    "EncodeError",
    "RegistryError",
    "canonical_form",
    "fingerprint",
    "load_schema",
    "make_codec",
]

KINDS: tuple[Kind, ...] = tuple(Kind)
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"

Record = dict[str, Any]
# body decoder: (message bytes, offset of the body) -> (record, offset after the body)
BodyDecoder = Callable[[bytes, int], tuple[Record, int]]


class DecodeError(ValueError):
    """A message that cannot be decoded: bad framing, unknown schema, truncated, garbage."""


class EncodeError(ValueError):
    """A record that does not fit its schema (or an unknown kind)."""


def load_schema(kind: str, schema_dir: Path | str | None = None) -> dict[str, Any]:
    """Our current schema for ``kind`` (the JSON of ``schemas/<kind>.avsc``, or of
    ``<schema_dir>/<kind>.avsc``); ValueError for an unknown kind."""
    return read_schema(kind, schema_dir)


def canonical_form(schema: Mapping[str, Any] | str) -> str:
    """Avro Parsing Canonical Form of ``schema``."""
    parsed = parse_schema(json.loads(schema) if isinstance(schema, str) else dict(schema),
                          named_schemas={})
    return str(to_parsing_canonical_form(parsed))


_RABIN_EMPTY = 0xC15D213AA4D7A795


def _rabin_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_RABIN_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_RABIN_TABLE = _rabin_table()


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO, the Rabin fingerprint the Avro spec defines for single-object encoding."""
    fp = _RABIN_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _RABIN_TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(schema: Mapping[str, Any] | str) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form."""
    return rabin64(canonical_form(schema).encode("utf-8")).to_bytes(8, "little")


@dataclass(frozen=True)
class _Reader:
    kind: str
    decode: BodyDecoder
    resolved: bool  # True when the writer schema differs from our reader schema


class Codec:
    """Encodes records of our current schemas; decodes any known/registered writer schema.

    ``schemas`` maps kind -> reader/writer schema (default: ``schemas/*.avsc``);
    ``writer_schemas`` are extra schemas (older or newer versions) whose single-object
    fingerprints this codec should recognise; ``registry`` + ``subjects`` (kind -> subject)
    switch encoding to the Confluent wire format. ``fast=False`` forces the fastavro path
    (reference and benchmark baseline).
    """

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]] | None = None, *,
                 writer_schemas: Iterable[Mapping[str, Any]] = (),
                 registry: Registry | None = None,
                 subjects: Mapping[str, str] | None = None,
                 fast: bool = True) -> None:
        if schemas is None:
            schemas = {kind: load_schema(kind) for kind in KINDS}
        if registry is not None and subjects is None:
            raise ValueError("a registry needs subjects (kind -> subject)")
        self._registry = registry
        self._subjects = dict(subjects or {})
        self._fast = fast
        self._schemas: dict[str, dict[str, Any]] = {k: dict(s) for k, s in schemas.items()}
        self._parsed: dict[str, Any] = {}
        self._kind_of_name: dict[str, str] = {}
        self._framed: dict[str, Callable[[Record], bytes]] = {}
        self._headers: dict[str, bytes] = {}
        self._by_fingerprint: dict[bytes, _Reader] = {}
        self._by_id: dict[int, _Reader] = {}
        self._unknown_ids: set[int] = set()
        self._column_decoders: dict[str, ColumnDecoder] | None = None
        for kind, schema in self._schemas.items():
            parsed = parse_schema(schema, named_schemas={})
            assert isinstance(parsed, dict)  # a record schema parses to a dict
            self._parsed[kind] = parsed
            self._kind_of_name[parsed["name"]] = kind
            fp = fingerprint(schema)
            self._by_fingerprint[fp] = _Reader(kind, self._same_schema_decoder(kind), False)
            if registry is None:
                self._headers[kind] = SINGLE_OBJECT_MAGIC + fp
        for writer in writer_schemas:
            self._add_writer(dict(writer))

    # ---------------------------------------------------------------- encoding
    def encode(self, kind: str, record: Record) -> bytes:
        """The framed Avro encoding of ``record`` (single-object, or Confluent with a registry)."""
        encoder = self._framed.get(kind)
        if encoder is None:
            encoder = self.encoder(kind)
        return encoder(record)

    def encoder(self, kind: str) -> Callable[[Record], bytes]:
        """``encode`` bound to one kind: ``codec.encoder("trade")(record)`` saves the per-call
        dispatch in a hot loop. Raises EncodeError for an unknown kind (and, with a registry,
        RegistryError when the schema cannot be registered)."""
        encoder = self._framed.get(kind)
        if encoder is not None:
            return encoder
        if kind not in self._schemas:
            raise EncodeError(f"unknown kind {kind!r} (known: {', '.join(self._schemas)})")
        header = self._headers.get(kind) or self._register(kind)
        fast = None
        if self._fast:
            from schemas import fastpath
            fast = fastpath.compile_encoder(self._schemas[kind], prefix=header)
        reference = self._reference_encode

        encode: Callable[[Record], bytes]
        if fast is None:
            def encode(record: Record) -> bytes:
                return header + reference(kind, record)
        else:
            def encode(record: Record, fast: Callable[[Record], bytes] = fast) -> bytes:
                try:
                    return fast(record)
                except Exception:  # the fast path refused it: the reference path decides
                    return header + reference(kind, record)
        self._framed[kind] = encode
        return encode

    def _reference_encode(self, kind: str, record: Record) -> bytes:
        schema = self._schemas[kind]
        if not isinstance(record, Mapping):
            raise EncodeError(f"{kind}: a record must be a dict, got {type(record).__name__}")
        full = dict(record)
        for field in schema["fields"]:  # fastavro would write defaults; validate them too
            if field["name"] not in full and "default" in field:
                full[field["name"]] = field["default"]
        try:
            fastavro.validation.validate(full, self._parsed[kind], raise_errors=True)
            out = io.BytesIO()
            fastavro.schemaless_writer(out, self._parsed[kind], full)
        except Exception as exc:
            detail = " ".join(str(exc).split())
            raise EncodeError(f"{kind} record does not match its schema: {detail}") from None
        return out.getvalue()

    def register_all(self) -> None:
        """With a registry, register every kind's schema now (RegistryError when one is
        refused or the registry is unreachable): a writer checks this before it produces."""
        if self._registry is not None:
            for kind in self._schemas:
                self.encoder(kind)

    def _register(self, kind: str) -> bytes:
        if kind not in self._schemas:
            raise EncodeError(f"unknown kind {kind!r} (known: {', '.join(self._schemas)})")
        assert self._registry is not None
        subject = self._subjects[kind]
        self._registry.set_compatibility(subject, "BACKWARD")
        schema_id = self._registry.register(subject, self._schemas[kind])
        self._by_id[schema_id] = self._by_fingerprint[fingerprint(self._schemas[kind])]
        header = CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")
        self._headers[kind] = header
        return header

    # ---------------------------------------------------------------- decoding
    def decode(self, data: bytes) -> tuple[str, Record]:
        """``(kind, record)`` of a framed message; DecodeError when it cannot be decoded."""
        if not isinstance(data, bytes):
            if data is None:
                raise DecodeError("empty message (no value)")
            data = bytes(data)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            reader = self._by_fingerprint.get(data[2:10])
            if reader is None:
                if len(data) < 10:
                    raise DecodeError(f"truncated single-object header ({len(data)} bytes)")
                raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()} "
                                  "(single-object encoding)")
            pos = 10
        elif data[:1] == CONFLUENT_MAGIC:
            if len(data) < 5:
                raise DecodeError(f"truncated Confluent header ({len(data)} bytes)")
            schema_id = int.from_bytes(data[1:5], "big")
            reader = self._by_id.get(schema_id) or self._fetch(schema_id)
            pos = 5
        else:
            start = data[:4].hex() or "nothing"
            raise DecodeError(f"not an Avro message we know: starts with {start} "
                              "(expected c301 single-object or 00 Confluent framing)")
        try:
            record, end = reader.decode(data, pos)
        except Exception as exc:
            raise DecodeError(f"{reader.kind}: truncated or corrupt body in a message of "
                              f"{len(data)} bytes ({type(exc).__name__}: {exc})") from None
        if end != len(data):
            raise DecodeError(f"{reader.kind}: {len(data) - end} trailing bytes after the record")
        return reader.kind, record

    # ---------------------------------------------------------------- batches
    def decode_batch(self, messages: Sequence[bytes]) -> BatchResult:
        """Decode many messages into numpy columns per kind (see :mod:`schemas.batch`)."""
        from schemas.batch import decode_batch
        return decode_batch(self, messages)

    def column_decoders(self) -> dict[str, ColumnDecoder]:
        """kind -> vectorised decoder of our schema (kinds it cannot handle are left out)."""
        if self._column_decoders is None:
            from schemas.batch import compile_column_decoder
            decoders = {}
            for kind, schema in self._schemas.items():
                decoder = compile_column_decoder(schema)
                if decoder is not None:
                    decoders[kind] = decoder
            self._column_decoders = decoders
        return self._column_decoders

    def fast_fingerprints(self) -> dict[bytes, str]:
        """Single-object fingerprint -> kind, for writer schemas equal to ours."""
        return {fp: r.kind for fp, r in self._by_fingerprint.items() if not r.resolved}

    def fast_schema_ids(self, schema_ids: Iterable[int]) -> dict[int, str]:
        """Registry id -> kind for the ids among ``schema_ids`` whose schema equals ours.

        Unknown ids are fetched (RegistryError when the registry is unreachable); an id the
        registry does not know is left out (decoding that message reports it)."""
        out = {}
        for schema_id in schema_ids:
            try:
                reader = self._by_id.get(schema_id) or self._fetch(schema_id)
            except DecodeError:
                continue
            if not reader.resolved:
                out[schema_id] = reader.kind
        return out

    def _fetch(self, schema_id: int) -> _Reader:
        if self._registry is None:
            raise DecodeError(f"Confluent-framed message with schema id {schema_id}, "
                              "but no schema registry is configured")
        if schema_id in self._unknown_ids:
            raise DecodeError(f"unknown schema id {schema_id} (not in the registry)")
        try:
            text = self._registry.schema_by_id(schema_id)
        except UnknownSchemaId:
            self._unknown_ids.add(schema_id)
            raise DecodeError(f"unknown schema id {schema_id} (not in the registry)") from None
        try:
            reader = self._add_writer(json.loads(text))
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"schema id {schema_id}: unusable writer schema: {exc}") from None
        self._by_id[schema_id] = reader
        return reader

    def _add_writer(self, writer_schema: dict[str, Any]) -> _Reader:
        """Learn a writer schema: same as ours -> fast path, else fastavro resolution."""
        fp = fingerprint(writer_schema)
        known = self._by_fingerprint.get(fp)
        if known is not None:
            return known
        parsed_writer = parse_schema(writer_schema, named_schemas={})
        name = parsed_writer.get("name") if isinstance(parsed_writer, dict) else None
        kind = self._kind_of_name.get(str(name))
        if kind is None:
            raise DecodeError(f"writer schema {name!r} is none of ours "
                              f"({', '.join(sorted(self._kind_of_name))})")
        reader = _Reader(kind, _resolving_decoder(parsed_writer, self._parsed[kind]), True)
        self._by_fingerprint[fp] = reader
        return reader

    def _same_schema_decoder(self, kind: str) -> BodyDecoder:
        if self._fast:
            from schemas import fastpath
            decoder = fastpath.compile_decoder(self._schemas[kind])
            if decoder is not None:
                return decoder
        return _resolving_decoder(self._parsed[kind], None)


def _resolving_decoder(writer: Any, reader: Any) -> BodyDecoder:
    def decode(data: bytes, pos: int) -> tuple[Record, int]:
        buf = io.BytesIO(data)
        buf.seek(pos)
        record = fastavro.schemaless_reader(buf, writer, reader)
        return record, buf.tell()  # type: ignore[return-value]
    return decode


def make_codec(config: Config) -> Codec:
    """The codec for ``config``: Confluent framing + registry when ``schema_registry.url``."""
    url = config.schema_registry.url
    if not url:
        return Codec()
    topics = config.kafka.topics
    subjects: dict[str, str] = {k: f"{topics.for_type(k.data_type)}-value" for k in Kind}
    return Codec(registry=Registry(config.schema_registry), subjects=subjects)
