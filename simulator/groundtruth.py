"""What the server sent on each WebSocket connection, as windows the model can regenerate.

Live ``T``/``Q`` data is recorded as half-open SIP-time windows per (event type, symbol):
every event of the model in a recorded window was sent, and nothing else. ``AM`` is
recorded as the minute starts sent. Storing windows instead of events keeps recording
free at hundreds of thousands of events per second, and the model turns them back into
the exact events (:meth:`SentLog.events`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simulator import wire
from simulator.model import MarketModel


@dataclass
class SentLog:
    conn_id: int
    windows: dict[tuple[str, str], list[list[int]]] = field(default_factory=dict)
    minutes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    frames: int = 0
    statuses: list[dict[str, str]] = field(default_factory=list)

    def add_window(self, ev: str, sym: str, start_ns: int, end_ns: int, count: int) -> None:
        spans = self.windows.setdefault((ev, sym), [])
        if spans and spans[-1][1] == start_ns:
            spans[-1][1] = end_ns  # contiguous with the previous send: extend
        else:
            spans.append([start_ns, end_ns])
        self.counts[ev] += count

    def spans(self, ev: str, sym: str) -> list[list[int]]:
        """Sorted, merged [start_ns, end_ns) windows of one (type, symbol)."""
        merged: list[list[int]] = []
        for start, end in sorted(self.windows.get((ev, sym), [])):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return merged

    def add_minute(self, sym: str, minute_start_ns: int) -> None:
        self.minutes[sym].append(minute_start_ns)
        self.counts["AM"] += 1

    def snapshot(self) -> SentLog:
        """A copy that the recording thread will not change underneath a reader."""
        return SentLog(self.conn_id, {k: [list(w) for w in v] for k, v in self.windows.items()},
                       defaultdict(list, {k: list(v) for k, v in self.minutes.items()}),
                       defaultdict(int, self.counts), self.frames, list(self.statuses))

    def to_json(self) -> dict[str, Any]:
        return {
            "conn": self.conn_id,
            "frames": self.frames,
            "counts": dict(self.counts),
            "windows": [{"ev": ev, "sym": sym, "spans": self.spans(ev, sym)}
                        for ev, sym in sorted(self.windows)],
            "minutes": {sym: list(m) for sym, m in sorted(self.minutes.items())},
            "statuses": list(self.statuses),
        }

    def events(self, model: MarketModel, ev: str | None = None,
               sym: str | None = None) -> list[dict[str, Any]]:
        """The WS events sent, regenerated: per (type, symbol) in SIP-time order."""
        out: list[dict[str, Any]] = []
        for e, s in sorted(self.windows):
            if (ev is not None and e != ev) or (sym is not None and s != sym):
                continue
            for start, end in self.spans(e, s):
                if e == "T":
                    out.extend(wire.ws_trades(model.trades(s, start, end)))
                else:
                    out.extend(wire.ws_quotes(model.quotes(s, start, end)))
        if ev in (None, "AM"):
            for s, minutes in sorted(self.minutes.items()):
                if sym is not None and s != sym:
                    continue
                for m in minutes:
                    bar = model.minute_bar(s, m)
                    if bar is not None:
                        out.append(wire.ws_minute_agg(bar))
        return out
