"""Field programs for the compiled encoder (``schemas._native.Encoder``), from the spec.

Pure: reads :mod:`schemas.spec` (each field's Avro type and its ``ws``/``rest`` origin)
and writes, per (kind, source), one operation per Avro field in the schema's order: which
JSON key(s) give the value and how it is checked and written, or the constant bytes the
source never carries. The encoder interprets them; nothing in the C names a field.

A field the interpreter cannot take exactly (a type or rule it does not know) raises
:class:`Unsupported`, and the caller keeps the reference path for that source.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

from schemas.spec import FieldSpec, Kind, KindSpec, Origin

# The per-call parameters of each source, in the order the caller passes them.
WS_PARAMS: tuple[str, ...] = ("received",)
REST_PARAMS: tuple[str, ...] = ("ticker", "timeframe", "bar_ns")
# The WebSocket key whose value names an event's kind.
TAG_KEY = "ev"
# The field a REST bar's end is computed from (spec rule "bar_end").
BAR_START = "start_ns"
# The field whose value is a record's event time (producer.mapping.event_timestamp_ns).
_EVENT_TIME = {Kind.BAR: "end_ns"}
_DEFAULT_EVENT_TIME = "sip_timestamp_ns"
# The field whose text is the Kafka key (schemas.keys.symbol_key) on the WebSocket.
KEY_FIELD = "symbol"

_SCALAR = {"long": "l", "int": "i", "double": "d", "string": "s", "boolean": "b"}

Op = tuple[str, str, tuple[tuple[int, str, int], ...], bytes, bytes | None, int, int]
Program = tuple[str | None, bytes, Any, int, int, list[Op]]


class Unsupported(ValueError):
    """A field whose type or rule the compiled encoder does not take."""


@dataclass(frozen=True)
class Compiled:
    """What ``schemas._native.Encoder(keys, tag_key, programs)`` takes, and the kinds of
    its programs in order."""

    keys: list[str]
    tag_key: str | None
    programs: list[Program]
    kinds: tuple[Kind, ...]


def avro_bytes(avro_type: Any, value: Any) -> bytes:
    """The Avro encoding of ``value`` as a field of ``avro_type`` (the reference's bytes)."""
    schema = fastavro.parse_schema({"type": "record", "name": "One", "namespace": "program",
                                    "fields": [{"name": "v", "type": avro_type}]},
                                   named_schemas={})
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, {"v": value})
    return out.getvalue()


def _branch(f: FieldSpec) -> bytes:
    """The union branch written before a value of a nullable field (b"" when not one)."""
    if not f.nullable:
        return b""
    index = next(i for i, t in enumerate(f.type) if t != "null")
    if index > 63:
        raise Unsupported(f"{f.name}: a union this wide")
    return bytes([index * 2])


def _absent(f: FieldSpec, origin: Origin) -> bytes | None:
    """What an absent value writes, or None when the reference refuses one."""
    if origin.absent is None and not f.nullable:
        return None
    try:
        return avro_bytes(f.type, origin.absent)
    except (ValueError, TypeError) as exc:
        raise Unsupported(f"{f.name}: absent value {origin.absent!r}: {exc}") from None


def _value_type(f: FieldSpec, rule: str) -> str:
    if f.base == "array":
        if f.items != "int":
            raise Unsupported(f"{f.name}: arrays of {f.items}")
        return "A" if rule == "one_or_many" else "a"
    if rule == "one_or_many":
        raise Unsupported(f"{f.name}: one_or_many on a {f.base}")
    try:
        return _SCALAR[f.base]
    except KeyError:
        raise Unsupported(f"{f.name}: a {f.base} from JSON") from None


def _op(f: FieldSpec, origin: Origin, slot: Mapping[str, int], params: tuple[str, ...],
        index_of: Mapping[str, int]) -> Op:
    rule = origin.rule
    if rule == "constant":
        try:
            return ("c", "l", (), avro_bytes(f.type, origin.value), None, 0, 0)
        except (ValueError, TypeError) as exc:
            raise Unsupported(f"{f.name}: constant {origin.value!r}: {exc}") from None
    if rule in ("required", "optional", "one_or_many"):
        vtype = _value_type(f, rule)
        absent = None if rule == "required" else _absent(f, origin)
        return ("j", vtype, ((slot[origin.keys[0]], vtype, origin.scale),), _branch(f), absent,
                0, 0)
    if rule == "decimal":
        if f.base != "double":
            raise Unsupported(f"{f.name}: decimal on a {f.base}")
        first, *rest = origin.keys
        sources = ((slot[first], "D", 1), *((slot[k], "d", 1) for k in rest))
        absent = _absent(f, origin) if f.nullable else None
        return ("j", "d", sources, _branch(f), absent, 0, 0)
    if rule in ("request", "received"):
        name = origin.keys[0] if rule == "request" else "received"
        if name not in params or f.base not in ("string", "long"):
            raise Unsupported(f"{f.name}: {rule} {name!r}")
        return ("p", _SCALAR[f.base], (), _branch(f), _absent(f, origin), params.index(name),
                0)
    if rule == "bar_end":
        if "bar_ns" not in params or BAR_START not in index_of or f.base != "long":
            raise Unsupported(f"{f.name}: bar_end")
        return ("+", "l", (), _branch(f), None, index_of[BAR_START], params.index("bar_ns"))
    raise Unsupported(f"{f.name}: rule {rule!r}")


def _keys(specs: Iterable[KindSpec], source: str) -> list[str]:
    keys: dict[str, None] = {}
    for kspec in specs:
        for f in kspec.fields:
            origin = f.source(source)
            if origin.rule in ("required", "optional", "one_or_many", "decimal"):
                keys.update(dict.fromkeys(origin.keys))
    return list(keys)


def program(kspec: KindSpec, source: str, header: bytes, topic: Any,
            slot: Mapping[str, int]) -> Program:
    """The program of one kind from one source ("ws" or "rest")."""
    params = WS_PARAMS if source == "ws" else REST_PARAMS
    index_of = {f.name: i for i, f in enumerate(kspec.fields)}
    ops = [_op(f, f.source(source), slot, params, index_of) for f in kspec.fields]
    time_op = index_of.get(_EVENT_TIME.get(kspec.kind, _DEFAULT_EVENT_TIME), -1)
    key_op = -1
    if source == "ws":
        key_op = index_of.get(KEY_FIELD, -1)
        if key_op < 0 or kspec.fields[key_op].ws.rule != "required" or \
                kspec.fields[key_op].base != "string":
            raise Unsupported(f"{kspec.kind}: no required string {KEY_FIELD!r} to key by")
    tag = kspec.kind.ev if source == "ws" else None
    return (tag, header, topic, time_op, key_op, ops)


def frame_programs(specs: Iterable[KindSpec], headers: Mapping[Kind, bytes],
                   topics: Mapping[str, Any]) -> Compiled:
    """The WebSocket programs: an event's ``ev`` selects its kind's program."""
    specs = list(specs)
    keys = _keys(specs, "ws")
    if TAG_KEY not in keys:
        keys.append(TAG_KEY)
    slot = {k: i for i, k in enumerate(keys)}
    programs = [program(s, "ws", headers[s.kind], topics[s.kind], slot) for s in specs]
    return Compiled(keys, TAG_KEY, programs, tuple(s.kind for s in specs))


def page_programs(specs: Iterable[KindSpec], headers: Mapping[Kind, bytes]) -> Compiled:
    """The REST programs, one per kind, chosen by the caller for each page."""
    specs = list(specs)
    keys = _keys(specs, "rest")
    slot = {k: i for i, k in enumerate(keys)}
    programs = [program(s, "rest", headers[s.kind], None, slot) for s in specs]
    return Compiled(keys, None, programs, tuple(s.kind for s in specs))


def header_of(codec: Any, kspec: KindSpec, record: Mapping[str, Any]) -> bytes:
    """The codec's framing prefix for ``kspec``'s records: what precedes the body it writes
    for ``record`` (ValueError when its body is not the schema's)."""
    full = codec.encode(kspec.kind.value, dict(record))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(kspec.schema, named_schemas={}),
                               dict(record))
    body = out.getvalue()
    if not full.endswith(body):
        raise ValueError(f"{kspec.kind}: the codec writes another body than the schema's")
    return full[:len(full) - len(body)]
