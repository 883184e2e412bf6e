"""The producer's durable watermark: what the next start must repair after a crash or a stop.

Per data type, ``acked_ns`` is an event time below which Kafka acknowledged every live
record the run received (or a failure was recorded as a gap): the live session advances
it whenever librdkafka's queue is empty, and saves it next to the gaps file at most about
once a second, atomically (temporary file, fsync, rename). At the next start the window
from each ``acked_ns`` to the new subscription is a :class:`~producer.gaps.Gap`: the
producer was down then (killed, crashed or stopped), so nothing streamed.

The file also keeps, for a wildcard subscription, the symbols seen streaming (the only
ones a repair can name) and whether the run ended with a clean stop (everything queued
acknowledged), which ``producer.repair_downtime: false`` leaves unrepaired.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import orjson

from common.files import replace_file
from producer.gaps import Gap

log = logging.getLogger(__name__)

SUFFIX = ".watermark"


def watermark_path(gaps_file: str | os.PathLike[str]) -> Path:
    """The state file that goes with a gaps file (``gaps.jsonl.watermark``)."""
    path = Path(gaps_file)
    return path.with_name(path.name + SUFFIX)


@dataclasses.dataclass(frozen=True)
class Watermark:
    acked_ns: dict[str, int]  # data type -> event time
    symbols: tuple[str, ...]  # the subscription
    seen: dict[str, tuple[str, ...]]  # data type -> symbols seen (wildcard subscriptions)
    clean_stop: bool  # stopped on request with nothing left unacknowledged
    written_ns: int

    def as_json(self) -> bytes:
        return orjson.dumps({"acked_ns": self.acked_ns, "symbols": list(self.symbols),
                             "seen": {t: list(s) for t, s in self.seen.items()},
                             "clean_stop": self.clean_stop, "written_ns": self.written_ns})

    @classmethod
    def from_json(cls, data: bytes) -> Watermark:
        d = orjson.loads(data)
        return cls(acked_ns={str(t): int(v) for t, v in d["acked_ns"].items()},
                   symbols=tuple(map(str, d["symbols"])),
                   seen={str(t): tuple(map(str, s)) for t, s in d.get("seen", {}).items()},
                   clean_stop=bool(d["clean_stop"]), written_ns=int(d["written_ns"]))


def read_watermark(path: Path) -> Watermark | None:
    """The saved watermark, or None when there is none (first start) or it is unreadable
    (logged: the downtime before this start then cannot be known)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("cannot read the producer watermark %s: %s", path, exc)
        return None
    try:
        return Watermark.from_json(data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.error("the producer watermark %s is not readable (%s); the downtime before "
                  "this start is not repaired", path, exc)
        return None


def write_watermark(path: Path, mark: Watermark) -> bool:
    """Replace the file atomically and durably; False (logged) when it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, mark.as_json(), durable=True)
        return True
    except OSError as exc:
        log.error("cannot write the producer watermark %s: %s", path, exc)
        return False


def downtime_gaps(mark: Watermark, end_ns: int, symbols: tuple[str, ...],
                  data_types: tuple[str, ...], repair_clean_stop: bool) -> list[Gap]:
    """Pure: the gaps between a saved watermark and a subscription live at ``end_ns``.

    One gap per distinct start (data types whose watermarks are equal share one), for the
    current subscription's symbols and the data types both runs carry; for a wildcard, the
    previous run's seen symbols. None after a clean stop unless ``repair_clean_stop``.
    """
    if mark.clean_stop and not repair_clean_stop:
        return []
    why = ("producer down between a clean stop and this start" if mark.clean_stop else
           "producer down: the previous run ended without a clean stop (killed, crashed, "
           "or records left unacknowledged); repairing from the last event Kafka "
           "acknowledged")
    by_start: dict[int, list[str]] = {}
    for data_type in data_types:
        start = mark.acked_ns.get(data_type)
        if start is not None and start < end_ns:
            by_start.setdefault(start, []).append(data_type)
    return [Gap(start_ns=start, end_ns=end_ns, disconnected_ns=mark.written_ns,
                symbols=symbols, data_types=tuple(types), reason=why, attempts=0,
                seen={t: mark.seen[t] for t in types if t in mark.seen})
            for start, types in sorted(by_start.items())]
