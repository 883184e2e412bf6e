"""The WebSocket side: Massive's ``/stocks`` protocol over aiohttp, fed by the model.

One broadcaster task generates each tick's events once per (type, symbol), serialises them
once with orjson, and each connection gets the pieces it subscribed to packed into frames
(JSON arrays of up to ``max_frame_events`` events, mixed types and symbols). Every
connection has its own outbound queue and writer task, so one slow client never holds the
others back; a client whose queue grows past ``slow_consumer_bytes`` is dropped with
``slow_consumer``.

Close codes (the status message always comes first): ``auth_failed``,
``max_connections`` and ``slow_consumer`` close with 1008 (policy violation),
``force_disconnect`` with 1012 (service restart) so that clients reconnect, server
shutdown with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import WSMsgType, web

from simulator import wire
from simulator.groundtruth import SentLog
from simulator.model import MINUTE_NS, MarketModel

log = logging.getLogger("simulator.ws")

CHANNELS = ("T", "Q", "AM")
MSG_MAX_CONNECTIONS = (
    "Maximum number of websocket connections exceeded. You have reached the connection "
    "limit for your account. Please contact support at https://massive.com/contact to "
    "increase your plan limit.")
MSG_SLOW_CONSUMER = "Slow consumer: the client fell behind and was disconnected"
MSG_FORCE_DISCONNECT = "Forced disconnect"

# A frame waiting to be sent: bytes, then what it holds, for the ground truth:
# ("T"|"Q", sym, start_ns, end_ns, count) windows and ("AM", sym, minute_ns) minutes.
Window = tuple[str, str, int, int, int]


@dataclass
class Frame:
    data: bytes
    windows: list[Window] = field(default_factory=list)
    minutes: list[tuple[str, int]] = field(default_factory=list)
    status: dict[str, str] | None = None


def status_frame(status: str, message: str) -> Frame:
    item = {"ev": "status", "status": status, "message": message}
    return Frame(orjson.dumps([item]), status=item)


@dataclass
class Connection:
    id: int
    ws: web.WebSocketResponse
    remote: str
    opened_ns: int
    key: str | None = None  # never exposed: only counted per key
    authed: bool = False
    subs: set[str] = field(default_factory=set)
    pairs: frozenset[tuple[str, str]] = frozenset()  # (ev, sym) wanted from the universe
    queue: deque[Frame] = field(default_factory=deque)
    queued_bytes: int = 0
    busy: bool = False  # a frame is being written
    dropping: bool = False  # over the slow-consumer bound; being closed
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.Task[None] | None = None
    closing: str | None = None  # why the server is closing it
    closed_ns: int | None = None
    sent: SentLog = field(init=False)

    def __post_init__(self) -> None:
        self.sent = SentLog(self.id)

    def info(self) -> dict[str, Any]:
        return {"conn": self.id, "remote": self.remote, "authed": self.authed,
                "subscriptions": sorted(self.subs), "opened_ns": self.opened_ns,
                "closed_ns": self.closed_ns, "closed_by_server": self.closing,
                "queued_bytes": self.queued_bytes, "counts": dict(self.sent.counts)}


@dataclass
class StreamSettings:
    api_keys: frozenset[str]
    max_connections: int
    slow_consumer_bytes: int
    tick_ms: int
    max_frame_events: int
    live: bool = True  # False: no real-time T/Q/AM, only bursts


class StreamHub:
    """Connections, subscriptions, the live broadcaster and bursts."""

    def __init__(self, model: MarketModel, settings: StreamSettings,
                 on_sent: Callable[[str, int], None] | None = None) -> None:
        self.model = model
        self.settings = settings
        self.conns: dict[int, Connection] = {}
        self.closed: dict[int, Connection] = {}
        self._next_id = 1
        self._per_key: dict[str, int] = {}
        self._universe = model.symbols
        self._on_sent = on_sent or (lambda ev, n: None)
        self._task: asyncio.Task[None] | None = None
        self.burst_cursor_ns = 1_704_153_600 * 1_000_000_000  # 2024-01-02T00:00:00Z
        self.burst_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.settings.live:
            self._task = asyncio.create_task(self._broadcast(), name="sim-broadcast")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(self.close(conn, None, None, code=1001, reason="shutdown")
                               for conn in list(self.conns.values())))

    # ------------------------------------------------------------------ connection
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, timeout=2.0,
                                   autoping=True)
        await ws.prepare(request)
        conn = Connection(self._next_id, ws, request.remote or "?", time.time_ns())
        self._next_id += 1
        self.conns[conn.id] = conn
        conn.writer = asyncio.create_task(self._write_loop(conn), name=f"sim-ws-{conn.id}")
        self.enqueue(conn, status_frame("connected", "Connected Successfully"))
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_message(conn, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
                if conn.closing:
                    break
        finally:
            self._release_key(conn)
            if conn.writer is not None and not conn.closing:
                conn.writer.cancel()
            self.conns.pop(conn.id, None)
            conn.closed_ns = conn.closed_ns or time.time_ns()
            self.closed[conn.id] = conn
        return ws

    def _release_key(self, conn: Connection) -> None:
        if conn.authed and conn.key is not None:
            self._per_key[conn.key] -= 1
            conn.authed = False

    async def _on_message(self, conn: Connection, data: str | bytes) -> None:
        try:
            msg = orjson.loads(data)
            action = msg.get("action")
            params = msg.get("params", "")
        except (orjson.JSONDecodeError, AttributeError):
            self.enqueue(conn, status_frame("error", "invalid JSON"))
            return
        if action == "auth":
            await self._auth(conn, params if isinstance(params, str) else "")
        elif action in ("subscribe", "unsubscribe"):
            if not conn.authed:
                self.enqueue(conn, status_frame("error", "not authorized"))
                return
            self._subscribe(conn, action, params if isinstance(params, str) else "")
        else:
            self.enqueue(conn, status_frame("error", f"unknown action: {action}"))

    async def _auth(self, conn: Connection, key: str) -> None:
        if conn.authed:
            self.enqueue(conn, status_frame("auth_success", "authenticated"))
            return
        keys = self.settings.api_keys
        if not key or (keys and key not in keys):
            await self.close(conn, status_frame("auth_failed", "authentication failed"),
                             "auth_failed")
            return
        if self._per_key.get(key, 0) >= self.settings.max_connections:
            await self.close(conn, status_frame("max_connections", MSG_MAX_CONNECTIONS),
                             "max_connections")
            return
        conn.key = key
        conn.authed = True
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self.enqueue(conn, status_frame("auth_success", "authenticated"))

    def _subscribe(self, conn: Connection, action: str, params: str) -> None:
        verb = "subscribed to" if action == "subscribe" else "unsubscribed to"
        frames = []
        for raw in params.split(","):
            channel = raw.strip()
            if not channel:
                continue
            ev, _, sym = channel.partition(".")
            if ev not in CHANNELS or not sym:
                frames.append({"ev": "status", "status": "error",
                               "message": f"invalid channel: {channel}"})
                continue
            if action == "subscribe":
                conn.subs.add(channel)
            else:
                conn.subs.discard(channel)
                if sym == "*":  # unsubscribing the wildcard drops that type entirely
                    conn.subs = {s for s in conn.subs if not s.startswith(ev + ".")}
            frames.append({"ev": "status", "status": "success",
                           "message": f"{verb}: {channel}"})
        conn.pairs = frozenset(self._pairs(conn.subs))
        for item in frames:  # one frame per channel, as Massive acks them
            self.enqueue(conn, Frame(orjson.dumps([item]), status=item))

    def _pairs(self, subs: Iterable[str]) -> Iterable[tuple[str, str]]:
        for channel in subs:
            ev, _, sym = channel.partition(".")
            if sym == "*":
                yield from ((ev, s) for s in self._universe)
            elif self.model.knows(sym):
                yield ev, sym

    # ------------------------------------------------------------------ sending
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def enqueue(self, conn: Connection, frame: Frame) -> bool:
        if conn.closing or conn.dropping:
            return False
        conn.queue.append(frame)
        conn.queued_bytes += len(frame.data)
        conn.wake.set()
        if conn.queued_bytes > self.settings.slow_consumer_bytes:
            conn.dropping = True
            self._spawn(self.close(
                conn, status_frame("slow_consumer", MSG_SLOW_CONSUMER), "slow_consumer"))
            return False
        return True

    async def _write_loop(self, conn: Connection) -> None:
        ws = conn.ws
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.queue:
                    frame = conn.queue.popleft()
                    if not frame.data:
                        return
                    if ws.closed:
                        # Our close frame is out (RFC 6455 5.5.1: no data frame may follow
                        # it) and a client stops reading at it: what would be written now
                        # is never delivered, so it is neither written nor recorded as sent.
                        return
                    conn.queued_bytes -= len(frame.data)
                    # send_frame writes the whole frame to the transport (or raises
                    # ConnectionResetError) before its only await, the drain wait: a
                    # cancellation therefore always comes after the frame was written.
                    conn.busy = True
                    try:
                        await ws.send_frame(frame.data, WSMsgType.TEXT)
                    except asyncio.CancelledError:
                        self._record(conn, frame)
                        raise
                    finally:
                        conn.busy = False
                    self._record(conn, frame)
        except (ConnectionResetError, RuntimeError):
            return

    def _record(self, conn: Connection, frame: Frame) -> None:
        sent = conn.sent
        sent.frames += 1
        if frame.status is not None:
            sent.statuses.append(frame.status)
        for ev, sym, start, end, count in frame.windows:
            sent.add_window(ev, sym, start, end, count)
            self._on_sent(ev, count)
        for sym, minute in frame.minutes:
            sent.add_minute(sym, minute)
            self._on_sent("AM", 1)

    async def close(self, conn: Connection, last: Frame | None, why: str | None,
                    code: int = 1008, reason: str = "") -> None:
        """Send ``last`` (a status) after what is already queued, then close."""
        if conn.closing:
            return
        conn.closing = why or reason
        self._release_key(conn)
        writer = conn.writer
        if why == "slow_consumer" and writer is not None:
            # Dropped: what is queued is discarded, the status goes out next. The writer
            # may be stuck waiting for the transport to drain; the frame it was writing
            # is already in the transport buffer.
            conn.queue.clear()
            conn.queued_bytes = 0
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        if last is not None:
            conn.queue.append(last)
            conn.queued_bytes += len(last.data)
        conn.queue.append(Frame(b""))  # the writer stops here
        conn.wake.set()
        if writer is None or writer.done():
            writer = conn.writer = asyncio.create_task(self._write_loop(conn))
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout=3.0)
        except (TimeoutError, ConnectionResetError, RuntimeError):
            writer.cancel()
        with contextlib.suppress(TimeoutError, ConnectionResetError, RuntimeError):
            await asyncio.wait_for(
                conn.ws.close(code=code, message=(reason or why or "").encode()), timeout=2.5)
        req = conn.ws._req
        if not conn.ws.closed and req is not None and req.transport is not None:
            req.transport.abort()
        conn.closed_ns = time.time_ns()

    async def force_disconnect(self, conn_id: int | None = None) -> list[int]:
        targets = [c for c in self.conns.values() if conn_id is None or c.id == conn_id]
        await asyncio.gather(*(self.close(
            c, status_frame("force_disconnect", MSG_FORCE_DISCONNECT), "force_disconnect",
            code=1012) for c in targets))
        return [c.id for c in targets]

    # ------------------------------------------------------------------ live data
    def _wanted(self) -> set[tuple[str, str]]:
        wanted: set[tuple[str, str]] = set()
        for conn in self.conns.values():
            if conn.authed and not conn.closing:
                wanted |= conn.pairs
        return wanted

    def window_pieces(self, pairs: Iterable[tuple[str, str]], start_ns: int, end_ns: int
                      ) -> dict[tuple[str, str], list[tuple[bytes, Window]]]:
        """``pieces`` for every T/Q pair, generating each symbol's window once."""
        by_sym: dict[str, set[str]] = {}
        for ev, sym in pairs:
            if ev in ("T", "Q"):
                by_sym.setdefault(sym, set()).add(ev)
        out: dict[tuple[str, str], list[tuple[bytes, Window]]] = {}
        for sym, evs in by_sym.items():
            if len(evs) == 2:
                trades, quotes = self.model.trades_and_quotes(sym, start_ns, end_ns)
                out["T", sym] = self.pieces("T", sym, start_ns, end_ns, trades)
                out["Q", sym] = self.pieces("Q", sym, start_ns, end_ns, quotes)
            else:
                (ev,) = evs
                out[ev, sym] = self.pieces(ev, sym, start_ns, end_ns)
        return out

    def pieces(self, ev: str, sym: str, start_ns: int, end_ns: int, cols: Any = None
               ) -> list[tuple[bytes, Window]]:
        """Serialised events of one (type, symbol) window, cut into frame-sized pieces,
        each with the exact sub-window it covers."""
        if ev == "T":
            cols = self.model.trades(sym, start_ns, end_ns) if cols is None else cols
            events = wire.ws_trades(cols)
        else:
            cols = self.model.quotes(sym, start_ns, end_ns) if cols is None else cols
            events = wire.ws_quotes(cols)
        return self.cut(ev, sym, start_ns, end_ns, events, cols.sip)

    def cut(self, ev: str, sym: str, start_ns: int, end_ns: int, events: list[Any],
            sip: Any) -> list[tuple[bytes, Window]]:
        """``events`` (with SIP times ``sip``) of one window, serialised in frame-sized
        pieces, each with the exact sub-window it covers."""
        if not events:  # still a window: it proves nothing was left out
            return [(b"", (ev, sym, start_ns, end_ns, 0))]
        size = self.settings.max_frame_events
        out = []
        for i in range(0, len(events), size):
            chunk = events[i:i + size]
            w0 = start_ns if i == 0 else int(sip[i])
            w1 = end_ns if i + size >= len(events) else int(sip[i + size])
            out.append((orjson.dumps(chunk)[1:-1], (ev, sym, w0, w1, len(chunk))))
        return out

    def pack(self, pieces: dict[tuple[str, str], list[tuple[bytes, Window]]],
             conn: Connection) -> list[Frame]:
        """One connection's share of ``pieces`` packed into frames of at most
        ``max_frame_events`` events (empty windows are recorded at once)."""
        limit = self.settings.max_frame_events
        frames: list[Frame] = []
        parts: list[bytes] = []
        windows: list[Window] = []
        n = 0
        for pair in conn.pairs:
            for data, window in pieces.get(pair, ()):
                if not data:
                    conn.sent.add_window(*window)
                    continue
                if n and n + window[4] > limit:
                    frames.append(Frame(b"[" + b",".join(parts) + b"]", windows))
                    parts, windows, n = [], [], 0
                parts.append(data)
                windows.append(window)
                n += window[4]
        if parts:
            frames.append(Frame(b"[" + b",".join(parts) + b"]", windows))
        return frames

    def dispatch(self, pieces: dict[tuple[str, str], list[tuple[bytes, Window]]],
                 conns: Iterable[Connection]) -> None:
        for conn in conns:
            for frame in self.pack(pieces, conn):
                if not self.enqueue(conn, frame):
                    break

    async def _broadcast(self) -> None:
        tick = self.settings.tick_ms / 1000
        prev = time.time_ns()
        while True:
            await asyncio.sleep(tick)
            now = time.time_ns()
            wanted = self._wanted()
            live = [c for c in self.conns.values() if c.authed and not c.closing]
            pieces = self.window_pieces(wanted, prev, now)
            self.dispatch(pieces, live)
            if now // MINUTE_NS > prev // MINUTE_NS:
                minute = (now // MINUTE_NS - 1) * MINUTE_NS
                syms = sorted({sym for ev, sym in wanted if ev == "AM"})
                if syms:
                    self._spawn(self._send_minute(minute, syms))
            prev = now

    async def send_minute(self, minute_ns: int) -> int:
        """Send the AM events of ``minute_ns`` to their subscribers now (tests need not
        wait for a minute boundary). Returns how many connections got a frame."""
        minute_ns -= minute_ns % MINUTE_NS
        syms = sorted({sym for ev, sym in self._wanted() if ev == "AM"})
        return await self._send_minute(minute_ns, syms) if syms else 0

    async def _send_minute(self, minute_ns: int, syms: list[str]) -> int:
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(None, lambda: self.encode_bars(minute_ns, syms))
        sent = 0
        for conn in list(self.conns.values()):
            if not conn.authed or conn.closing:
                continue
            for frame in self.bar_frames(encoded, minute_ns, conn):
                sent += self.enqueue(conn, frame)
        return sent

    def encode_bars(self, minute_ns: int, syms: Iterable[str]) -> dict[str, bytes]:
        """The AM events of one minute (symbols without a trade in it have none)."""
        bars = {s: self.model.minute_bar(s, minute_ns) for s in syms}
        return {s: orjson.dumps(wire.ws_minute_agg(b)) for s, b in bars.items()
                if b is not None}

    def bar_frames(self, encoded: dict[str, bytes], minute_ns: int, conn: Connection
                   ) -> list[Frame]:
        mine = [s for s in encoded if ("AM", s) in conn.pairs]
        size = self.settings.max_frame_events
        return [Frame(b"[" + b",".join(encoded[s] for s in part) + b"]",
                      minutes=[(s, minute_ns) for s in part])
                for part in (mine[i:i + size] for i in range(0, len(mine), size))]

    # ------------------------------------------------------------------ bursts
    async def burst(self, events: int, conn_id: int | None = None) -> dict[str, Any]:
        """Send about ``events`` model events of the subscribed T/Q channels as fast as
        possible, from a simulated clock (``burst_cursor_ns``, 2024-01-02 onward, then
        continuing), so bursts never overlap each other or the live stream."""
        async with self.burst_lock:
            targets = [c for c in self.conns.values() if c.authed and not c.closing
                       and (conn_id is None or c.id == conn_id)]
            wanted = {p for c in targets for p in c.pairs if p[0] != "AM"}
            if not targets or not wanted:
                return {"events": 0, "frames": 0, "connections": []}
            rate = sum(self.model.trades_per_second if ev == "T"
                       else self.model.quotes_per_second for ev, _ in wanted)
            if rate <= 0:
                return {"events": 0, "frames": 0, "connections": []}
            start = self.burst_cursor_ns
            end = start + max(1, int(events / rate * 1e9))
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            pieces = await loop.run_in_executor(
                None, lambda: self.window_pieces(wanted, start, end))
            self.burst_cursor_ns = end
            t1 = time.perf_counter()
            before = {c.id: c.sent.frames for c in targets}
            total = sum(w[4] for ps in pieces.values() for _, w in ps)
            t1 = time.perf_counter()
            await self._feed(targets, {c.id: deque(self.pack(pieces, c)) for c in targets})
            t2 = time.perf_counter()
            frames = sum(c.sent.frames - before[c.id] for c in targets)
            return {"events": total, "frames": frames, "start_ns": start, "end_ns": end,
                    "connections": [c.id for c in targets],
                    "prepare_s": round(t1 - t0, 6), "send_s": round(t2 - t1, 6)}

    async def _feed(self, targets: list[Connection], pending: dict[int, deque[Frame]]
                    ) -> None:
        """Feed each queue as it drains (a burst is not a slow consumer by itself), until
        every frame has been handed to the transports."""
        high = max(1, self.settings.slow_consumer_bytes // 4)
        while True:
            busy = False
            for c in targets:
                queued = pending[c.id]
                while queued and not c.closing and c.queued_bytes < high:
                    self.enqueue(c, queued.popleft())
                busy |= bool(not c.closing and (queued or c.queue or c.busy))
            if not busy:
                break
            await asyncio.sleep(0.0005)

    async def play(self, seconds: float, start_ns: int | None = None,
                   conn_id: int | None = None) -> dict[str, Any]:
        """Send the next ``seconds`` of simulated market time as fast as the clients read:
        from the burst clock (or ``start_ns`` when that is later), minute by minute, each
        minute's T/Q followed by its AM bars, as the live stream orders them at a minute
        boundary. The events of the whole window are generated once per symbol (a market
        day in miniature has thousands of symbols), then cut by minute."""
        async with self.burst_lock:
            targets = [c for c in self.conns.values() if c.authed and not c.closing
                       and (conn_id is None or c.id == conn_id)]
            wanted = {p for c in targets for p in c.pairs}
            start = max(self.burst_cursor_ns, start_ns or 0)
            end = start + max(1, int(seconds * 1e9))
            self.burst_cursor_ns = end
            if not targets or not wanted:
                return {"events": 0, "bars": 0, "frames": 0, "start_ns": start,
                        "end_ns": end, "connections": []}
            loop = asyncio.get_running_loop()
            t0 = time.perf_counter()
            minutes = await loop.run_in_executor(
                None, lambda: self.minute_pieces(wanted, start, end))
            t1 = time.perf_counter()
            before = {c.id: c.sent.frames for c in targets}
            events = bars = 0
            for pieces, bar_minute, encoded in minutes:
                events += sum(w[4] for ps in pieces.values() for _, w in ps)
                bars += len(encoded)
                pending = {c.id: deque(self.pack(pieces, c)
                                       + self.bar_frames(encoded, bar_minute, c))
                           for c in targets}
                await self._feed(targets, pending)
            t2 = time.perf_counter()
            frames = sum(c.sent.frames - before[c.id] for c in targets)
            return {"events": events, "bars": bars, "frames": frames, "start_ns": start,
                    "end_ns": end, "connections": [c.id for c in targets],
                    "prepare_s": round(t1 - t0, 6), "send_s": round(t2 - t1, 6)}

    def minute_pieces(self, pairs: set[tuple[str, str]], start_ns: int, end_ns: int
                      ) -> list[tuple[dict[tuple[str, str], list[tuple[bytes, Window]]],
                                      int, dict[str, bytes]]]:
        """Per minute of [start, end): the T/Q pieces, and the AM events of the minute that
        ends there (none when the window ends inside a minute)."""
        cuts = [start_ns, *range(start_ns - start_ns % MINUTE_NS + MINUTE_NS, end_ns,
                                 MINUTE_NS), end_ns]
        out: list[tuple[dict[tuple[str, str], list[tuple[bytes, Window]]], int,
                        dict[str, bytes]]] = [({}, 0, {}) for _ in cuts[1:]]
        am = {sym for ev, sym in pairs if ev == "AM"}
        syms = sorted({sym for _, sym in pairs})
        bounds = np.array(cuts, dtype=np.int64)
        active: list[list[str]] = [[] for _ in cuts[1:]]
        for sym in syms:
            trades, quotes = self.model.trades_and_quotes(sym, start_ns, end_ns)
            if sym in am:
                self.model.prime_day(sym, start_ns, end_ns, trades)
            for ev, cols in (("T", trades), ("Q", quotes)):
                if (ev, sym) not in pairs:
                    continue
                # serialised once per window, then cut by minute: most symbol-minutes hold
                # a handful of events, so per-minute column work would dominate
                events = wire.ws_trades(trades) if ev == "T" else wire.ws_quotes(quotes)
                idx = np.searchsorted(cols.sip, bounds).tolist()
                for k in range(len(cuts) - 1):
                    i0, i1 = idx[k], idx[k + 1]
                    out[k][0][ev, sym] = self.cut(ev, sym, cuts[k], cuts[k + 1],
                                                  events[i0:i1], cols.sip[i0:i1])
            if sym in am:
                tidx = np.searchsorted(trades.sip, bounds)
                for k in range(len(cuts) - 1):
                    # a minute ending here had trades (or began before the window)
                    if cuts[k + 1] % MINUTE_NS == 0 and (tidx[k] < tidx[k + 1]
                                                         or cuts[k] % MINUTE_NS):
                        active[k].append(sym)
        for k, syms_k in enumerate(active):
            if cuts[k + 1] % MINUTE_NS == 0:
                minute = cuts[k + 1] - MINUTE_NS
                out[k] = (out[k][0], minute, self.encode_bars(minute, syms_k))
        return out
