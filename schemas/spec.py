"""One specification per record kind, derived from ``schemas/<kind>.avsc``.

Each field of a schema carries a ``"massive"`` attribute that says how the WebSocket (``ws``)
and the REST API (``rest``) give its value and which MarketStore column(s) it fills. Avro
parsers ignore extra attributes and the Parsing Canonical Form drops them, so annotating a
schema changes neither its fingerprint nor its registry compatibility. Everything that maps,
validates or lays out records (``producer.mapping``, ``backfill.mapping``,
``consumer.buckets``, ``consumer.columns``, the native field programs) reads this module's
data instead of naming fields itself, so adding a field is a change to the ``.avsc`` only.

Field annotation (every key but ``ws``/``rest`` optional)::

    "massive": {"ws":   {"rule": "required", "keys": ["t"], "scale": 1000000},
                "rest": {"rule": "required", "keys": ["sip_timestamp"]},
                "columns": [{"name": "SipTimestamp", "dtype": "<i8", "check": "timestamp"}]}

Source rules (``Origin.rule``), a closed vocabulary:

- ``required``: ``keys[0]`` is present, not null, and of the field's type;
- ``optional``: ``keys[0]``; absent or null gives ``absent``;
- ``decimal``: ``keys[0]`` holds a decimal string (or a number); when it is absent (REST:
  or empty), the other keys are read as numbers, required unless the field is nullable;
- ``one_or_many``: a single integer (becomes a one-element list) or a list of integers;
  absent gives ``absent``;
- ``constant``: ``value``, something the source never carries (a null, an enum symbol, a
  fixed timeframe);
- ``request``: the REST request's parameter ``keys[0]`` (``ticker`` or ``timeframe``);
- ``received``: when the producer received the event (WebSocket only);
- ``bar_end``: the end of the bar that starts at ``start_ns`` and spans the request's
  timeframe (REST bars, which carry no end).

``scale`` multiplies an integer value (1_000_000: WebSocket milliseconds to nanoseconds).
``absent`` defaults to the field's Avro default, else null; the string ``"NaN"`` stands for
a float NaN (JSON has none). How strictly a value is "of the field's type" is the source's
convention: WebSocket values are type-checked (an ``int`` for long/int, an ``int`` or
``float`` for double, a non-empty string for string, a ``bool`` for boolean); REST values
are converted (``int()``, ``float()``, ``str()``, ``bool()``).

Column checks (``Column.check``), a closed vocabulary; a column with an ``absent`` value
accepts a null and stores ``absent``:

- ``epoch``: the timestamp's Unix seconds (a bar's start floored to its row slot);
- ``nanoseconds``: the timestamp's sub-second part (variable-length buckets);
- ``timestamp``: Unix nanoseconds, after 1970 and before 2100;
- ``price``: a finite number; ``side_price``: finite, or NaN for a one-sided quote's
  missing side; ``size``: finite and not negative; ``number``: any number;
- ``id32``: an integer in 0..2**31-1; ``count``: an integer in 0..2**63-1;
- ``codes``: up to 4 condition codes packed into one int64 (``consumer.buckets.pack_codes``);
- ``flag``: a boolean as 1/0; ``enum``: an enum symbol's index.

Record annotation: ``"massive": {"layout": [column names]}`` gives the storage order of the
columns it names (that of existing MarketStore buckets); other columns follow in field order.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHECKS",
    "RULES",
    "SCHEMA_DIR",
    "Column",
    "FieldSpec",
    "Kind",
    "KindSpec",
    "Origin",
    "SpecError",
    "load_spec",
    "load_specs",
    "read_schema",
    "spec",
]

SCHEMA_DIR = Path(__file__).resolve().parent
SOURCES: tuple[str, ...] = ("ws", "rest")
RULES = frozenset({"required", "optional", "decimal", "one_or_many", "constant", "request",
                   "received", "bar_end"})
_KEYED_RULES = frozenset({"required", "optional", "decimal", "one_or_many", "request"})
CHECKS = frozenset({"epoch", "nanoseconds", "timestamp", "price", "side_price", "size",
                    "number", "id32", "count", "codes", "flag", "enum"})


class SpecError(ValueError):
    """A schema whose ``massive`` annotations are missing or inconsistent."""


class Kind(enum.StrEnum):
    """A record kind and everything named after it (a str: ``Kind.TRADE == "trade"``)."""

    data_type: str  # config data type, also the topic's key in kafka.topics
    ev: str  # WebSocket event code
    attr_group: str  # MarketStore attribute group
    variable: bool  # variable-length MarketStore rows (Nanoseconds column)

    def __new__(cls, value: str, data_type: str, ev: str, attr_group: str,
                variable: bool) -> Kind:
        member = str.__new__(cls, value)
        member._value_ = value
        member.data_type = data_type
        member.ev = ev
        member.attr_group = attr_group
        member.variable = variable
        return member

    BAR = ("bar", "bars", "AM", "OHLCV", False)
    TRADE = ("trade", "trades", "T", "TRADE", True)
    QUOTE = ("quote", "quotes", "Q", "QUOTE", True)

    @property
    def avsc(self) -> str:
        """The schema's file name in a schema directory."""
        return f"{self.value}.avsc"

    @property
    def topic(self) -> str:
        """The name of this kind's topic in the config's ``kafka.topics`` section."""
        return self.data_type

    @classmethod
    def of(cls, kind: str) -> Kind:
        """The kind named ``kind`` ("bar"...); ValueError naming the known ones otherwise."""
        try:
            return _BY_VALUE[kind]
        except (KeyError, TypeError):
            raise ValueError(f"unknown kind {kind!r} (known: {', '.join(_BY_VALUE)})") from None

    @classmethod
    def of_ev(cls, ev: str) -> Kind:
        """The kind of a WebSocket ``ev`` code; KeyError for any other."""
        return _BY_EV[ev]

    @classmethod
    def of_data_type(cls, data_type: str) -> Kind:
        """The kind of a config data type (``bars``...); KeyError for any other."""
        return _BY_DATA_TYPE[data_type]

    @classmethod
    def of_attr_group(cls, attr_group: str) -> Kind:
        """The kind stored in a MarketStore attribute group (``TRADE``...); KeyError else."""
        return _BY_ATTR_GROUP[attr_group]


_BY_VALUE: dict[str, Kind] = {k.value: k for k in Kind}
_BY_EV: dict[str, Kind] = {k.ev: k for k in Kind}
_BY_DATA_TYPE: dict[str, Kind] = {k.data_type: k for k in Kind}
_BY_ATTR_GROUP: dict[str, Kind] = {k.attr_group: k for k in Kind}


@dataclass(frozen=True)
class Origin:
    """How one source (WebSocket or REST) gives a field's value."""

    rule: str
    keys: tuple[str, ...] = ()
    scale: int = 1
    value: Any = None  # the value of a "constant"
    absent: Any = None  # the value when the source does not send one


@dataclass(frozen=True)
class Column:
    """A MarketStore column a field fills."""

    name: str
    dtype: str  # numpy type string, little-endian ("<i8", "<f8", "<i4", "<i1")
    check: str
    absent: int | float | None = None  # stored for a null; None: a null is refused


@dataclass(frozen=True, eq=False)
class FieldSpec:
    """One Avro field: its type, its sources and its columns."""

    name: str
    type: Any  # the Avro type as the .avsc writes it
    base: str  # the type without its null: long, int, double, boolean, string, enum, array
    nullable: bool
    has_default: bool
    default: Any
    ws: Origin
    rest: Origin
    columns: tuple[Column, ...]
    items: str | None = None  # an array's item type
    symbols: tuple[str, ...] = ()  # an enum's symbols

    def source(self, name: str) -> Origin:
        """The origin for ``name`` ("ws" or "rest")."""
        if name == "ws":
            return self.ws
        if name == "rest":
            return self.rest
        raise ValueError(f"unknown source {name!r} (known: {', '.join(SOURCES)})")


@dataclass(frozen=True, eq=False)
class KindSpec:
    """The specification of one kind: its schema, its fields in schema order, its columns."""

    kind: Kind
    schema: dict[str, Any]  # the .avsc as JSON, annotations included
    fields: tuple[FieldSpec, ...]
    columns: tuple[Column, ...]  # storage order
    column_fields: tuple[str, ...]  # the field each column comes from, same order

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @functools.cached_property
    def dtype(self) -> np.dtype:
        """The structured numpy dtype of this kind's MarketStore rows."""
        return np.dtype([(c.name, c.dtype) for c in self.columns])


def _nan(value: Any) -> Any:
    return math.nan if value == "NaN" else value


def _origin(where: str, field: Mapping[str, Any], raw: Any) -> Origin:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected an object like {{\"rule\": \"required\", "
                        f"\"keys\": [...]}}, got {raw!r}")
    unknown = set(raw) - {"rule", "keys", "scale", "value", "absent"}
    if unknown:
        raise SpecError(f"{where}: unknown attribute(s) {', '.join(sorted(unknown))}")
    rule = raw.get("rule")
    if rule not in RULES:
        raise SpecError(f"{where}: rule {rule!r} is none of {', '.join(sorted(RULES))}")
    keys = raw.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise SpecError(f"{where}: keys must be a list of names, got {keys!r}")
    if rule in _KEYED_RULES and not keys:
        raise SpecError(f"{where}: rule {rule!r} needs keys")
    if rule not in _KEYED_RULES and keys:
        raise SpecError(f"{where}: rule {rule!r} takes no keys")
    scale = raw.get("scale", 1)
    if type(scale) is not int or scale < 1:
        raise SpecError(f"{where}: scale must be a positive integer, got {scale!r}")
    default = field.get("default")
    absent = _nan(raw["absent"]) if "absent" in raw else default
    return Origin(rule=rule, keys=tuple(keys), scale=scale, value=_nan(raw.get("value")),
                  absent=absent)


def _column(where: str, raw: Any) -> Column:
    if not isinstance(raw, Mapping) or set(raw) - {"name", "dtype", "check", "absent"}:
        raise SpecError(f"{where}: a column is an object of name, dtype, check and absent, "
                        f"got {raw!r}")
    name, dtype, check = raw.get("name"), raw.get("dtype"), raw.get("check")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{where}: a column needs a name")
    try:
        np.dtype(dtype)
    except TypeError:
        raise SpecError(f"{where}: column {name}: dtype {dtype!r} is not a numpy type") from None
    if check not in CHECKS:
        raise SpecError(f"{where}: column {name}: check {check!r} is none of "
                        f"{', '.join(sorted(CHECKS))}")
    return Column(name=name, dtype=str(dtype), check=check, absent=_nan(raw.get("absent")))


def _field(where: str, raw: Mapping[str, Any]) -> FieldSpec:
    t = raw["type"]
    nullable = isinstance(t, list) and "null" in t
    if isinstance(t, list):
        others = [x for x in t if x != "null"]
        if len(others) != 1:
            raise SpecError(f"{where}: only a type or a union of null and one type is "
                            f"supported, got {t!r}")
        t = others[0]
    items = None
    symbols: tuple[str, ...] = ()
    if isinstance(t, Mapping):
        base = str(t["type"])
        if base == "array":
            items = str(t["items"])
        elif base == "enum":
            symbols = tuple(t["symbols"])
    else:
        base = str(t)
    note = raw.get("massive")
    if not isinstance(note, Mapping) or "ws" not in note or "rest" not in note:
        raise SpecError(f"{where}: needs a \"massive\" attribute with \"ws\" and \"rest\"")
    unknown = set(note) - {"ws", "rest", "columns"}
    if unknown:
        raise SpecError(f"{where}: unknown massive attribute(s) {', '.join(sorted(unknown))}")
    columns = note.get("columns", [])
    if not isinstance(columns, list):
        raise SpecError(f"{where}: columns must be a list")
    return FieldSpec(
        name=raw["name"], type=raw["type"], base=base, nullable=nullable,
        has_default="default" in raw, default=raw.get("default"),
        ws=_origin(f"{where} ws", raw, note["ws"]),
        rest=_origin(f"{where} rest", raw, note["rest"]),
        columns=tuple(_column(where, c) for c in columns), items=items, symbols=symbols)


def read_schema(kind: Kind | str, schema_dir: Path | str | None = None) -> dict[str, Any]:
    """The JSON of ``<schema_dir>/<kind>.avsc`` (default: this package's schemas)."""
    kind = Kind.of(kind)
    path = Path(schema_dir or SCHEMA_DIR) / kind.avsc
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def load_spec(kind: Kind | str, schema_dir: Path | str | None = None) -> KindSpec:
    """The specification of ``kind`` from ``<schema_dir>/<kind>.avsc``; SpecError when its
    annotations are missing or inconsistent."""
    kind = Kind.of(kind)
    schema = read_schema(kind, schema_dir)
    fields = tuple(_field(f"{kind.avsc} field {raw.get('name')!r}", raw)
                   for raw in schema["fields"])
    by_name = {c.name: (f.name, c) for f in fields for c in f.columns}
    if len(by_name) != sum(len(f.columns) for f in fields):
        raise SpecError(f"{kind.avsc}: two fields name the same column")
    note = schema.get("massive", {})
    layout = note.get("layout", []) if isinstance(note, Mapping) else None
    if not isinstance(layout, list):
        raise SpecError(f"{kind.avsc}: massive.layout must be a list of column names")
    missing = [name for name in layout if name not in by_name]
    if missing:
        raise SpecError(f"{kind.avsc}: massive.layout names no field's column: "
                        f"{', '.join(missing)}")
    order = list(dict.fromkeys(layout)) + [n for n in by_name if n not in layout]
    return KindSpec(kind=kind, schema=schema, fields=fields,
                    columns=tuple(by_name[n][1] for n in order),
                    column_fields=tuple(by_name[n][0] for n in order))


def load_specs(schema_dir: Path | str | None = None) -> dict[Kind, KindSpec]:
    """Every kind's specification from ``schema_dir`` (default: this package's schemas)."""
    return {kind: load_spec(kind, schema_dir) for kind in Kind}


@functools.cache
def spec(kind: Kind | str) -> KindSpec:
    """The specification of ``kind`` from this package's schemas (loaded once)."""
    return load_spec(kind)
