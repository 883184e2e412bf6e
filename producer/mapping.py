"""Massive WebSocket events (AM, T, Q) -> records whose keys are the .avsc field names.

Pure functions, no I/O. What each field is read from, how it is scaled (live timestamps
arrive in Unix milliseconds and become nanoseconds, never the other way) and what an
absent value becomes is the schema's specification (:mod:`schemas.spec`), compiled once
per kind into a straight-line function (:mod:`schemas.mapgen`). Every field the schema
needs is checked for presence and type, because a half-valid record would either fail
later in the encoder, far from its cause, or worse, be written with a wrong value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from schemas.mapgen import WsMapper, compile_ws
from schemas.spec import Kind, KindSpec, load_specs

Record = dict[str, Any]

NS_PER_MS = 1_000_000


class MappingError(ValueError):
    """An event that cannot become a record: unknown ``ev``, missing or ill-typed field."""


class WsMapping:
    """Maps WebSocket events of every kind in ``specs`` (default: the package's schemas)."""

    def __init__(self, specs: Mapping[Kind, KindSpec] | None = None) -> None:
        specs = load_specs() if specs is None else specs
        self.mappers: dict[str, tuple[Kind, WsMapper]] = {
            kind.ev: (kind, compile_ws(s, MappingError)) for kind, s in specs.items()}

    @classmethod
    def from_dir(cls, schema_dir: Path | str) -> WsMapping:
        return cls(load_specs(schema_dir))

    def record(self, ev: dict[str, Any], received_ns: int | None) -> tuple[str, Record]:
        """Map one WS event object to ``(kind, record)`` (kind: a :class:`Kind`); raise
        :class:`MappingError` if bad."""
        try:
            kind, mapper = self.mappers[ev["ev"]]
        except KeyError:
            if type(ev) is not dict:
                raise MappingError(
                    f"event must be a JSON object, got {type(ev).__name__}") from None
            if "ev" not in ev:
                raise MappingError("event without 'ev' field") from None
            code = repr(ev["ev"])
            raise MappingError(f"unknown event type ev={code[:20]}") from None
        except TypeError:  # unhashable ev value, or ev not a mapping
            raise MappingError("event must be a JSON object with a string 'ev'") from None
        return kind, mapper(ev, received_ns)


_DEFAULT = WsMapping()
record_from_ws_event = _DEFAULT.record


def event_timestamp_ns(kind: str, record: Record) -> int:
    """The market time of a record: bar end for bars, SIP time for trades and quotes."""
    return record["end_ns"] if kind == Kind.BAR else record["sip_timestamp_ns"]  # type: ignore[no-any-return]
