"""The gap log: windows in which live data may be missing, and what became of each.

``producer.gaps_file`` holds JSON lines of three kinds, appended and fsynced one at a time:

* a :class:`Gap` (``start_ns``, ``end_ns``, ``symbols``, ``data_types``, ``reason``...);
* ``{"repaired": <gap id>, "records": n, "at_ns": t}``: the whole gap was fetched from
  REST and Kafka acknowledged every record;
* ``{"unrepairable": <gap id>, "reason": ..., "repaired_symbols": {type: [symbols]},
  "records": n, "at_ns": t}``: what could be fetched was (``repaired_symbols``), the rest
  cannot be (``reason``: e.g. symbols of a wildcard subscription that never streamed).

A gap with neither marker is pending: its repair was cut off, failed, or never ran.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Gap:
    """A window in which live data may have been missed, for repair from REST.

    ``start_ns``: the newest event time (or frame receipt time, whichever is earlier)
    seen before the connection dropped; ``end_ns``: when the new subscription was live.
    Everything the feed published strictly inside (start_ns, end_ns) may be missing;
    repairing the closed interval with some overlap is harmless (the consumer is
    exactly-once). Minute bars overlapping the window (ending after ``start_ns``) may be
    missing too. ``end_ns`` is the stop time when the process stopped while disconnected
    (``reason`` then ends with "; stopped before reconnecting").

    ``seen``: for a wildcard subscription, per data type, the symbols that streamed in the
    session before the gap (the only ones a repair can name).
    """

    start_ns: int
    end_ns: int
    disconnected_ns: int
    symbols: tuple[str, ...]
    data_types: tuple[str, ...]
    reason: str
    attempts: int = 1  # reconnection attempts it took (0: stopped before any)
    # Stable across runs so a marker line can name it; lines written before ids existed
    # get the same id derived from the window when read back.
    id: str = ""
    seen: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", gap_id(self.start_ns, self.end_ns))

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["symbols"] = list(self.symbols)
        d["data_types"] = list(self.data_types)
        if self.seen:
            d["seen"] = {t: list(s) for t, s in self.seen.items()}
        else:
            del d["seen"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gap:
        seen = d.get("seen") or {}
        return cls(start_ns=int(d["start_ns"]), end_ns=int(d["end_ns"]),
                   disconnected_ns=int(d["disconnected_ns"]),
                   symbols=tuple(d["symbols"]), data_types=tuple(d["data_types"]),
                   reason=str(d.get("reason", "")), attempts=int(d.get("attempts", 1)),
                   id=str(d.get("id") or ""),
                   seen={str(t): tuple(map(str, s)) for t, s in seen.items()})


def gap_id(start_ns: int, end_ns: int) -> str:
    return f"{start_ns}-{end_ns}"


@dataclasses.dataclass(frozen=True)
class RepairOutcome:
    """What a gap repair did: the records Kafka acknowledged, the REST results that went
    to the dead-letter topic instead (``dead_letters``), and, when part of the gap cannot
    be repaired, why (``unrepairable``) and what was (``repaired_symbols``)."""

    records: int
    unrepairable: str = ""
    repaired_symbols: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    dead_letters: int = 0


@dataclasses.dataclass
class GapLog:
    """What a gaps file says: the gaps (first line per id, file order) and their
    ``repaired`` and ``unrepairable`` marker lines, by gap id."""

    gaps: list[Gap]
    repaired: dict[str, dict[str, Any]]
    bad_lines: int = 0  # unreadable lines (e.g. torn by a crash mid-write), skipped
    unrepairable: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def pending(self) -> list[Gap]:
        return [g for g in self.gaps
                if g.id not in self.repaired and g.id not in self.unrepairable]


def parse_gap_log(text: str, source: str = "gaps file") -> GapLog:
    """Pure parser of the gaps file format (see the module docstring)."""
    gaps: dict[str, Gap] = {}
    repaired: dict[str, dict[str, Any]] = {}
    unrepairable: dict[str, dict[str, Any]] = {}
    bad = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
            if "repaired" in d:
                repaired[str(d["repaired"])] = d
            elif "unrepairable" in d:
                unrepairable[str(d["unrepairable"])] = d
            else:
                gap = Gap.from_dict(d)
                gaps.setdefault(gap.id, gap)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                AttributeError) as exc:
            bad += 1
            log.warning("%s line %d is not a gap record, skipped: %s", source, n, exc)
    return GapLog(list(gaps.values()), repaired, bad, unrepairable)


def read_gap_log(path: str | os.PathLike[str]) -> GapLog:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return GapLog([], {})
    return parse_gap_log(text, str(path))


def read_gaps(path: str | os.PathLike[str], *, pending: bool = False) -> list[Gap]:
    """Every gap recorded in a gaps file (missing file: none); with ``pending=True`` only
    those with no marker."""
    gap_log = read_gap_log(path)
    return gap_log.pending if pending else gap_log.gaps


def append_line(path: Path, line: dict[str, Any]) -> bool:
    """Append one JSON line and fsync it; False (logged) when the file cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(orjson.dumps(line) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError as exc:
        log.error("cannot write to the gaps file %s: %s", path, exc, extra={"line": line})
        return False
