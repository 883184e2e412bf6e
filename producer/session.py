"""The live WebSocket session: connect, authenticate, subscribe, stream into Kafka, reconnect.

One asyncio task reads frames and, inline, parses them (protocol), maps every event
(mapping), encodes it (codec) and hands it to librdkafka (publisher): no queue between
the socket and Kafka, so nothing received can sit in a Python buffer when we stop. Kafka
back-pressure pauses reading (and is logged) instead of dropping anything.

Every window in which live data may be missing is recorded as a :class:`Gap` in
``producer.gaps_file`` (see ``producer.gaps``) and handed to the gap listeners and to gap
repair (``backfill``), which run as background tasks of this session so they never block
reading:

* a lost subscribed connection: from the newest data seen to the new subscription;
* records Kafka did not acknowledge (a finite ``message.timeout.ms``, or any other
  delivery failure): per data type, their event-time range and symbols;
* the producer's own downtime: at the first subscription of a run, from the watermark the
  previous run saved (``producer.watermark``) to now.

A repair that fails is retried with backoff while the session runs (e.g. until Kafka is
back). A completed repair appends a ``repaired`` marker line, a repair that could only
cover part of the gap an ``unrepairable`` one; at start every gap without a marker is
repaired again in the background (see :meth:`set_gap_repair`).

Exit codes of :meth:`ProducerSession.run`: 0 stopped on request, ``EXIT_AUTH_FAILED`` when
the server refused the key (no retry: the same key will not work the second time),
``EXIT_GAVE_UP`` after ``producer.max_reconnects`` consecutive failed attempts,
``EXIT_KAFKA_FAILED`` on a fatal Kafka producer error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from operator import itemgetter
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from backfill.symbols import is_glob
from common.backoff import backoff_s
from common.config import Config
from common.metrics import NAMESPACE
from producer.gaps import Gap, RepairOutcome, append_line, read_gap_log
from producer.mapping import MappingError, event_timestamp_ns, record_from_ws_event
from producer.nativeframes import NativeFrames
from producer.protocol import (
    AuthFailed,
    MassiveProtocol,
    ProtocolStats,
    State,
    subscription_channels,
)
from producer.publisher import Publisher, PublisherError
from producer.watermark import (
    Watermark,
    downtime_gaps,
    read_watermark,
    watermark_path,
    write_watermark,
)
from schemas.spec import Kind

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_AUTH_FAILED = 3
EXIT_GAVE_UP = 4
EXIT_KAFKA_FAILED = 5

# Errors the codec may raise for a record that does not fit the schema.
_ENCODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError)
# How often failed deliveries become gaps and the watermark is saved (when it moved).
WATERMARK_INTERVAL_S = 1.0
# At most this long a read pause for the watermark (a broker round trip, normally): longer
# means Kafka is slow or down, and the watermark waits for the next try.
WATERMARK_DRAIN_S = 0.5
# A failed repair is tried again after a growing delay (e.g. until Kafka is back).
REPAIR_RETRY_INITIAL_S = 1.0
REPAIR_RETRY_MAX_S = 60.0
# At a stop, how long to wait for Kafka to acknowledge what is queued.
FINAL_FLUSH_S = 60.0
_LIVE_TIME_STEP_NS = 1_000_000  # the WebSocket's event times are milliseconds
_SYMBOL_OF_ROUTED = itemgetter(2)  # (topic, value, symbol) from the native encoder


GapListener = Callable[[Gap], Coroutine[Any, Any, None]]
# Repairs a gap (returns the records published, or a RepairOutcome saying what part could
# not be repaired) or raises.
GapRepair = Callable[[Gap], Awaitable["int | RepairOutcome"]]


class _Disconnected(Exception):
    """The connection ended (or never came up); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProducerSession:
    """Streams the configured channels into Kafka until :meth:`request_stop`."""

    def __init__(self, config: Config, publisher: Publisher, *, codec: Any = None,
                 registry: CollectorRegistry | None = None,
                 on_gap: GapListener | None = None,
                 handshake_timeout_s: float = 10.0) -> None:
        m = config.massive
        self._api_key = config.require_api_key()
        self.url = m.ws_server.rstrip("/") + "/stocks"
        self.symbols = tuple(m.symbols)
        self.data_types = tuple(m.data_types)
        self.channels = subscription_channels(m.data_types, m.symbols)
        self.publisher = publisher
        if codec is None:
            from schemas.codec import make_codec
            codec = make_codec(config)
        self._encode = codec.encode
        topics = config.kafka.topics
        native = NativeFrames(codec, {"bar": topics.bars, "trade": topics.trades,
                                      "quote": topics.quotes})
        self._native_encode = native.encode if native.enabled else None
        self._native_kinds = native.kinds
        self.native_frames = 0  # frames the compiled encoder took whole
        self._pcfg = config.producer
        self.gaps_file = Path(config.producer.gaps_file)
        self.handshake_timeout_s = handshake_timeout_s
        self._gap_listeners: list[GapListener] = [on_gap] if on_gap else []
        self._gap_repair: GapRepair | None = None
        self._repairing: set[str] = set()  # gap ids whose repair started in this run
        # One repair at a time: a flapping connection (e.g. dropped as a slow consumer)
        # records a gap per drop, and parallel repairs would add REST and Kafka load
        # exactly when the live stream is already behind.
        self._repair_lock = asyncio.Lock()
        self._resumed = False  # pending gaps of earlier runs were picked up
        self.gaps_repaired = 0
        self.gaps_unrepairable = 0
        self.gap_repairs_failed = 0
        # Per data type: the newest event time received, and the newest below which Kafka
        # acknowledged everything (both start at the run's first subscription).
        self._newest: dict[str, int] = dict.fromkeys(self.data_types, 0)
        self._acked: dict[str, int] = {}
        self._acked_at_produced = -1  # publisher.produced when _acked last moved
        self._queue_seen_empty = time.monotonic()  # or a drain for the watermark tried
        self.watermark_file = watermark_path(self.gaps_file)
        self._watermark_dirty = False
        # Symbols seen streaming, per data type: only for wildcard subscriptions, where
        # they are the only symbols a gap repair can name.
        self._seen: dict[str, set[str]] | None = (
            {t: set() for t in self.data_types} if any(map(is_glob, self.symbols)) else None)
        self._seen_saved = 0  # symbols in self._seen when the watermark was last saved
        self._failed_seen = 0  # publisher.failed at the last bookkeeping tick
        self.unacknowledged_at_stop: int | None = None  # set by run()'s final flush

        self.stats = ProtocolStats()
        self.events_by_kind: dict[str, int] = dict.fromkeys(Kind, 0)
        self.encode_errors = 0
        self.reconnects = 0
        self.gaps: list[Gap] = []
        self.newest_event_ns = 0
        self.last_receipt_ns = 0
        self.lag_ns: int | None = None
        self.state = "stopped"
        self.protocol: MassiveProtocol | None = None
        self.exit_reason = ""

        self._ws: ClientConnection | None = None
        # Set once a stop was requested; in-process tasks watch it to wind down.
        self.stop_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # start, disconnected, why, reconnects before it
        self._pending_gap: tuple[int, int, str, int] | None = None
        self._subscribed = False  # the current/last connection reached SUBSCRIBED
        self._subscribed_at = 0.0  # monotonic time the current connection subscribed
        if registry is not None:
            registry.register(_SessionCollector(self))

    def __repr__(self) -> str:
        return f"ProducerSession(url={self.url!r}, state={self.state})"

    # -- hooks for the in-process backfill / gap repair --------------------------------

    def add_gap_listener(self, listener: GapListener) -> None:
        """``await listener(gap)`` runs as a background task for every gap recorded."""
        self._gap_listeners.append(listener)

    def set_gap_repair(self, repair: GapRepair) -> None:
        """Repair gaps with ``await repair(gap)`` in background tasks: each live gap when
        it closes, and, when the session starts, every gap the gaps file still lists as
        pending (left by a crash, a stop mid-repair or a failed repair). A completed repair
        appends a ``repaired`` marker to the gaps file (``unrepairable`` when ``repair``
        returns a :class:`RepairOutcome` saying part of it cannot be); a failed one is
        retried with backoff while the session runs, and stays pending for the next start
        until then. Callable before :meth:`run` or, from any thread, while it runs."""
        self._gap_repair = repair
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._resume_pending_gaps)

    def start_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` beside the read loop; failures are logged; cancelled at stop."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed: %s", task.get_name(), exc,
                      exc_info=exc, extra={"task": task.get_name()})

    # -- control ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.protocol is not None and self.protocol.authenticated and \
            self._ws is not None

    def health(self) -> tuple[bool, str]:
        if self.connected:
            return True, f"{self.state}: {len(self.channels)} channels\n"
        return False, f"{self.state}\n"

    def request_stop(self) -> None:
        """Stop reading (the socket is closed cleanly, frames already here are still
        processed), then :meth:`run` returns. Safe from signal handlers on the loop."""
        if self.stop_event.is_set():
            return
        log.info("stop requested: closing the websocket, then flushing Kafka")
        self.stop_event.set()
        if self._ws is not None and self._loop is not None:
            self._loop.create_task(self._ws.close())

    # -- main loop ----------------------------------------------------------------------

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._resume_pending_gaps()
        self.start_task(self._bookkeeping(), name="producer-watermark")
        failures = 0
        try:
            while not self.stop_event.is_set():
                if self.publisher.fatal_error:
                    self.exit_reason = f"Kafka producer failed: {self.publisher.fatal_error}"
                    return EXIT_KAFKA_FAILED
                subscribed = False
                try:
                    subscribed = await self._connection()
                except AuthFailed as exc:
                    self.exit_reason = (f"the server refused the API key: {exc} (check "
                                        "massive.api_key / MASSIVE_API_KEY)")
                    log.error("authentication failed: %s", exc,
                              extra={"url": self.url, "server_message": str(exc)})
                    return EXIT_AUTH_FAILED
                except _Disconnected as exc:
                    subscribed = self._subscribed
                    if self.stop_event.is_set():
                        break
                    # Only a connection that streamed for as long as the longest backoff
                    # resets the count: a server that subscribes us and drops us at once
                    # must still meet a growing delay (and max_reconnects), not a loop.
                    stable = subscribed and (time.monotonic() - self._subscribed_at
                                             >= self._pcfg.reconnect_max_s)
                    failures = 0 if stable else failures + 1
                    log.warning("websocket disconnected: %s", exc.reason,
                                extra={"url": self.url, "reason": exc.reason,
                                       "failed_attempts": failures})
                except PublisherError as exc:
                    self.exit_reason = str(exc)
                    log.critical("%s", exc)
                    return EXIT_KAFKA_FAILED
                if self.stop_event.is_set():
                    break
                limit = self._pcfg.max_reconnects
                if limit and failures > limit:
                    self.exit_reason = (f"gave up after {limit} reconnection attempts "
                                        f"to {self.url}")
                    log.error("%s", self.exit_reason)
                    return EXIT_GAVE_UP
                delay = self._backoff(max(failures, 1))
                self.state = "reconnecting"
                log.info("reconnecting", extra={"in_s": round(delay, 3),
                                                 "attempt": failures + 1})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
                if not self.stop_event.is_set():
                    self.reconnects += 1
            self.exit_reason = "stopped"
            return EXIT_OK
        finally:
            self.state = "stopped"
            if self._pending_gap is not None:
                self._close_gap(time.time_ns(), stopped=True)
            await self._stop_tasks()
            await self._final_flush()

    def _backoff(self, attempt: int) -> float:
        return backoff_s(attempt - 1, self._pcfg.reconnect_initial_s, self._pcfg.reconnect_max_s)

    async def _connection(self) -> bool:
        """One connection's life. Returns only when stopped; otherwise raises."""
        self.state = "connecting"
        try:
            ws = await asyncio.wait_for(
                connect(self.url, max_size=None, open_timeout=self.handshake_timeout_s,
                        close_timeout=5),
                self.handshake_timeout_s + 1)
        except InvalidURI as exc:
            raise _Disconnected(f"invalid websocket URL: {exc}") from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _Disconnected(f"cannot connect to {self.url}: "
                                f"{type(exc).__name__}: {exc}") from None
        proto = MassiveProtocol(self._api_key, self.channels, self.stats)
        self.protocol, self._ws = proto, ws
        self.state = "connected"
        self._subscribed = False
        drop_reason = "disconnected"
        try:
            if self.stop_event.is_set():
                await ws.close()
            await self._handshake(ws, proto)
            self._subscribed = True
            self._subscribed_at = time.monotonic()
            self.state = "subscribed"
            if not self._acked:
                self._first_subscription(time.time_ns())
            if self._pending_gap is not None:
                self._close_gap(time.time_ns())
            await self._stream(ws, proto)
        except ConnectionClosed as exc:
            if self.stop_event.is_set():
                return self._subscribed
            drop_reason = self._close_reason(exc, proto)
            raise _Disconnected(drop_reason) from None
        except AuthFailed:
            await ws.close()
            raise
        finally:
            if self._subscribed and self._pending_gap is None and not (
                    self.stop_event.is_set()):
                self._open_gap(drop_reason)
            self.protocol, self._ws = None, None
            with contextlib.suppress(Exception):
                await ws.close()
        return self._subscribed

    async def _handshake(self, ws: ClientConnection, proto: MassiveProtocol) -> None:
        deadline = time.monotonic() + self.handshake_timeout_s
        while proto.state is not State.SUBSCRIBED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if proto.authenticated:
                    log.warning("not every channel was acknowledged; streaming anyway",
                                extra={"acked": len(proto.acked),
                                       "channels": len(proto.channels)})
                    return
                await ws.close()
                raise _Disconnected(f"no answer to {proto.state.value} within "
                                    f"{self.handshake_timeout_s:g}s")
            try:
                frame = await asyncio.wait_for(ws.recv(False), remaining)
            except TimeoutError:
                continue
            self._handle_frame(proto, frame)
            for message in proto.take_outbox():
                await ws.send(message)

    async def _stream(self, ws: ClientConnection, proto: MassiveProtocol) -> None:
        recv = ws.recv
        handle = self._handle_frame
        pub = self.publisher
        poll = pub.poll
        high = 0.8 * pub.max_queue_messages
        max_age = self._pcfg.watermark_max_age_s
        while True:
            frame = await recv(False)  # bytes: orjson validates UTF-8 while parsing
            if not pub.queue_depth:  # everything received so far is acknowledged
                self._queue_seen_empty = time.monotonic()
                self._mark_acknowledged()
            elif time.monotonic() - self._queue_seen_empty > max_age:
                self._drain_for_the_watermark()
            handle(proto, frame)
            poll(0)
            if pub.queue_depth > high:
                await pub.wait_for_room(stop=self.stop_event)
            if pub.fatal_error:
                raise PublisherError(f"Kafka producer failed: {pub.fatal_error}")

    def _handle_frame(self, proto: MassiveProtocol, frame: bytes | str) -> None:
        """The hot path: one frame -> records -> librdkafka's queue.

        The native frame encoder (schemas/_native.c, when built) takes a whole frame of
        well-formed events straight to routed records. Any other frame (a status, odd
        shapes, bad events, or every frame without the build) goes through the protocol,
        the mapping and the codec, which encode it identically or reject it with a clear
        error.
        """
        received_ns = time.time_ns()
        self.last_receipt_ns = received_ns
        ts = self._native_frame(proto, frame, received_ns)
        if ts is None:
            ts = self._python_frame(proto, frame, received_ns)
        if ts:
            if ts > self.newest_event_ns:
                self.newest_event_ns = ts
            self.lag_ns = received_ns - ts

    def _native_frame(self, proto: MassiveProtocol, frame: bytes | str,
                      received_ns: int) -> int | None:
        """The frame through the native encoder: its last event's time, or None when the
        encoder is not built or does not take this frame whole."""
        native = self._native_encode
        if native is None or proto.state is not State.SUBSCRIBED or type(frame) is not bytes:
            return None
        out = native(frame, received_ns)
        if out is None:
            return None
        records, counts, ts = out
        self.native_frames += 1
        proto.count_data_frame(len(records))
        # The encoder returns one event time per frame (its last event's): it stands for
        # every type in it, the same trust in the feed's time order a live gap's start takes.
        by_kind: dict[str, int] = {}
        events, newest, seen = self.events_by_kind, self._newest, self._seen
        for kind, n in zip(self._native_kinds, counts, strict=True):
            if not n:
                continue
            by_kind[kind] = n
            events[kind] += n
            data_type = kind.data_type
            if ts > newest.get(data_type, ts):
                newest[data_type] = ts
            if seen is not None and data_type in seen:
                seen[data_type].update(map(_SYMBOL_OF_ROUTED, records))
        self.publisher.produce_routed(records, by_kind)
        return ts

    def _python_frame(self, proto: MassiveProtocol, frame: bytes | str,
                      received_ns: int) -> int:
        """The frame through the protocol and the reference path: its last encoded event's
        time (0 when none)."""
        events = proto.feed(frame)
        if not events:
            return 0
        items: list[tuple[str, str, bytes]] = []
        add = items.append
        counts = self.events_by_kind
        newest, seen = self._newest, self._seen
        ts = 0
        for ev in events:
            try:
                kind, record = record_from_ws_event(ev, received_ns)
                value = self._encode(kind, record)
            except MappingError as exc:
                proto.reject(ev, "bad_event", str(exc))
                continue
            except _ENCODE_ERRORS as exc:
                self.encode_errors += 1
                proto.reject(ev, "unencodable", f"{type(exc).__name__}: {exc}")
                continue
            symbol = record["symbol"]
            ts = event_timestamp_ns(kind, record)
            add((kind, symbol, value))
            counts[kind] += 1
            data_type = Kind.of(kind).data_type
            if ts > newest.get(data_type, ts):
                newest[data_type] = ts
            if seen is not None and data_type in seen:
                seen[data_type].add(symbol)
        if items:
            self.publisher.produce_many(items)
        return ts

    # -- gaps ---------------------------------------------------------------------------

    def _close_reason(self, exc: ConnectionClosed | None, proto: MassiveProtocol) -> str:
        parts = []
        if exc is not None:
            rcvd = exc.rcvd
            parts.append(f"closed (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
                         if rcvd else "connection lost without a close frame")
        status = proto.last_status
        if status is not None and not status.is_ok:
            parts.append(f"last status {status.status}: {status.message}")
        return "; ".join(parts) or "disconnected"

    def _open_gap(self, reason: str) -> None:
        now = time.time_ns()
        start = self.last_receipt_ns or now
        if self.newest_event_ns:
            start = min(start, self.newest_event_ns)
        self._pending_gap = (start, now, reason, self.reconnects)
        self.state = "disconnected"

    def _close_gap(self, end_ns: int, stopped: bool = False) -> None:
        assert self._pending_gap is not None
        start, disconnected, reason, reconnects_before = self._pending_gap
        self._pending_gap = None
        if stopped:
            reason += "; stopped before reconnecting"
        gap = Gap(start_ns=start, end_ns=max(end_ns, start), disconnected_ns=disconnected,
                  symbols=self.symbols, data_types=self.data_types, reason=reason,
                  attempts=self.reconnects - reconnects_before, seen=self._seen_now())
        # no repair while shutting down; the file keeps it for later
        self._record_gap(gap, repair=not stopped)

    def _record_gap(self, gap: Gap, repair: bool = True) -> None:
        """Write ``gap`` to the gaps file, then hand it to the listeners and the repair."""
        self.gaps.append(gap)
        self._append(gap.as_dict())
        log.warning("recorded a gap in the live data",
                    extra={"gap_id": gap.id, "gap_start_ns": gap.start_ns,
                           "gap_end_ns": gap.end_ns,
                           "gap_s": round((gap.end_ns - gap.start_ns) / 1e9, 3),
                           "data_types": list(gap.data_types), "reason": gap.reason,
                           "gaps_file": str(self.gaps_file)})
        if not repair:
            return
        for listener in self._gap_listeners:
            self.start_task(listener(gap), name=f"gap-listener-{gap.id}")
        if self._gap_repair is not None:
            self._repairing.add(gap.id)
            self.start_task(self._repair(gap), name=f"gap-repair-{gap.id}")

    def _seen_now(self) -> dict[str, tuple[str, ...]]:
        if self._seen is None:
            return {}
        return {t: tuple(sorted(symbols)) for t, symbols in self._seen.items()}

    def _record_failures(self, stopping: bool = False) -> None:
        """Records Kafka did not acknowledge become gaps, one per data type: their
        event-time range and symbols. While failures keep coming (Kafka still down) they
        are gathered into one range; the watermark does not move meanwhile."""
        pub = self.publisher
        if not pub.failures_pending:
            self._failed_seen = pub.failed
            return
        if not stopping and pub.failed != self._failed_seen:
            self._failed_seen = pub.failed
            return
        now = time.time_ns()
        for failed in pub.take_failed():
            # live times are whole milliseconds: REST dates the same print up to 1 ms later
            end_ns = failed.end_ns + _LIVE_TIME_STEP_NS - 1
            self._record_gap(Gap(
                start_ns=failed.start_ns, end_ns=end_ns, disconnected_ns=now,
                symbols=tuple(sorted(failed.symbols)), data_types=(failed.data_type,),
                reason=f"Kafka did not acknowledge {failed.records} record(s): "
                       f"{failed.error}",
                attempts=0, id=f"{failed.start_ns}-{end_ns}-{failed.data_type}"),
                repair=not stopping)

    # -- the watermark (producer.watermark) ----------------------------------------------

    def _first_subscription(self, now_ns: int) -> None:
        """The run's first subscription: the downtime since the previous run's watermark
        becomes a gap (repaired like any other), then this run's watermark starts here."""
        previous = read_watermark(self.watermark_file)
        self._acked = dict.fromkeys(self.data_types, now_ns)
        if previous is not None:
            gaps = downtime_gaps(previous, now_ns, self.symbols, self.data_types,
                                 repair_clean_stop=self._pcfg.repair_downtime)
            if previous.clean_stop and not self._pcfg.repair_downtime:
                log.info("the downtime since the previous clean stop is not repaired "
                         "(producer.repair_downtime: false)",
                         extra={"stopped_ns": previous.written_ns})
            for gap in gaps:
                self._record_gap(gap)
        # written at once: the gaps above are in the gaps file now, the old mark is done
        write_watermark(self.watermark_file, self._watermark(clean_stop=False))

    def _drain_for_the_watermark(self) -> None:
        """The queue was not seen empty for ``producer.watermark_max_age_s``: a steady load
        keeps it busy, so the watermark would stay where it was and a crash would have the
        next start repair everything since. Stop reading (the frame waits in the socket)
        while librdkafka sends what lingers and Kafka acknowledges it, for at most
        ``WATERMARK_DRAIN_S``; if it did, the watermark moves. Blocking the loop is the
        point: nothing may be produced meanwhile."""
        self._queue_seen_empty = time.monotonic()  # tried: the next try is max_age away
        if not self.publisher.drain(WATERMARK_DRAIN_S):
            self._mark_acknowledged()

    def _mark_acknowledged(self) -> None:
        """librdkafka's queue is empty: every record received so far was acknowledged or
        reported as failed, so the watermark may move up to the newest event times."""
        pub = self.publisher
        if pub.produced == self._acked_at_produced or not self._acked or \
                pub.failures_pending:  # failures must be gaps before the mark passes them
            return
        self._acked_at_produced = pub.produced
        acked = self._acked
        for data_type, newest in self._newest.items():
            if newest > acked[data_type]:
                acked[data_type] = newest
                self._watermark_dirty = True

    def _watermark(self, clean_stop: bool) -> Watermark:
        return Watermark(acked_ns=dict(self._acked), symbols=self.symbols,
                         seen=self._seen_now(), clean_stop=clean_stop,
                         written_ns=time.time_ns())

    async def _bookkeeping(self) -> None:
        """Every ``WATERMARK_INTERVAL_S``: failed deliveries become gaps, then the
        watermark moves and, when it did, is saved (off the event loop)."""
        pub = self.publisher
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), WATERMARK_INTERVAL_S)
            if self.stop_event.is_set():
                return
            pub.poll(0)
            self._record_failures()
            if not pub.queue_depth:
                self._mark_acknowledged()
            seen = sum(map(len, self._seen.values())) if self._seen is not None else 0
            if self._acked and (self._watermark_dirty or seen != self._seen_saved):
                self._watermark_dirty, self._seen_saved = False, seen
                await asyncio.to_thread(write_watermark, self.watermark_file,
                                        self._watermark(clean_stop=False))

    async def _final_flush(self) -> None:
        """At the end of :meth:`run`: wait for Kafka's acknowledgements, record what it
        refused as gaps, and save the watermark (a clean stop when nothing is left)."""
        remaining = await asyncio.to_thread(self.publisher.flush, FINAL_FLUSH_S)
        self.unacknowledged_at_stop = remaining
        failed = self.publisher.failures_pending
        self._record_failures(stopping=True)
        if not remaining:
            self._mark_acknowledged()
        if self._acked:  # this run subscribed; otherwise the previous run's mark stays
            await asyncio.to_thread(write_watermark, self.watermark_file,
                                    self._watermark(clean_stop=not remaining and not failed))

    # -- repair ---------------------------------------------------------------------------

    def _resume_pending_gaps(self) -> None:
        """Start repairing the gaps earlier runs left pending (once per run)."""
        if self._resumed or self._gap_repair is None or self.stop_event.is_set():
            return
        self._resumed = True
        gap_log = read_gap_log(self.gaps_file)
        pending = [g for g in gap_log.pending if g.id not in self._repairing]
        if not pending:
            return
        self._repairing.update(g.id for g in pending)
        log.warning("%d gap(s) in %s were never repaired; repairing them in the "
                    "background", len(pending), self.gaps_file,
                    extra={"gap_ids": [g.id for g in pending]})
        self.start_task(self._repair_in_turn(pending), name="gap-repair-pending")

    async def _repair_in_turn(self, gaps: list[Gap]) -> None:
        for gap in gaps:
            if self.stop_event.is_set():
                return
            await self._repair(gap)

    async def _repair(self, gap: Gap) -> None:
        """Repair ``gap``, retrying with backoff while the session runs; then mark it."""
        assert self._gap_repair is not None
        where = {"gap_id": gap.id, "gap_start_ns": gap.start_ns, "gap_end_ns": gap.end_ns,
                 "gaps_file": str(self.gaps_file)}
        attempt = 0
        while True:
            try:
                async with self._repair_lock:
                    if self.stop_event.is_set():
                        return  # stays pending for the next start
                    result = await self._gap_repair(gap)
                break
            except asyncio.CancelledError:
                log.warning("gap repair cut off by the stop; the gap stays pending in %s "
                            "and is repaired at the next start", self.gaps_file, extra=where)
                raise
            except Exception as exc:
                self.gap_repairs_failed += 1
                delay = backoff_s(attempt, REPAIR_RETRY_INITIAL_S, REPAIR_RETRY_MAX_S)
                attempt += 1
                log.error("gap repair failed; the gap stays pending in %s and is retried "
                          "in %.1f s (or at the next start): %s: %s", self.gaps_file, delay,
                          type(exc).__name__, exc, extra={**where, "attempt": attempt})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), delay)
        outcome = result if isinstance(result, RepairOutcome) else RepairOutcome(int(result))
        marker: dict[str, Any]
        if outcome.unrepairable:
            marker = {"unrepairable": gap.id, "reason": outcome.unrepairable,
                      "records": outcome.records,
                      "repaired_symbols": outcome.repaired_symbols, "at_ns": time.time_ns()}
        else:
            marker = {"repaired": gap.id, "records": outcome.records,
                      "at_ns": time.time_ns()}
        if outcome.dead_letters:
            marker["dead_letters"] = outcome.dead_letters
            log.warning("gap repair sent %d REST result(s) that could not become records "
                        "to the dead-letter topic", outcome.dead_letters, extra=where)
        if not await asyncio.to_thread(self._append, marker):
            return
        if outcome.unrepairable:
            self.gaps_unrepairable += 1
            log.warning("gap repaired in part; the rest cannot be repaired: %s",
                        outcome.unrepairable, extra={**where, "records": outcome.records})
        else:
            self.gaps_repaired += 1
            log.info("gap repair recorded", extra={**where, "records": outcome.records})

    def _append(self, line: dict[str, Any]) -> bool:
        return append_line(self.gaps_file, line)

    async def _stop_tasks(self, grace_s: float = 5.0) -> None:
        """Background tasks see ``stop_event`` first and get ``grace_s`` to finish."""
        self.stop_event.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)


METRIC_PREFIX = f"{NAMESPACE}_producer"


class _SessionCollector(Collector):
    """Prometheus view of the session's plain counters, read at scrape time."""

    def __init__(self, session: ProducerSession) -> None:
        self._s = session

    def collect(self) -> Any:
        s = self._s
        events = CounterMetricFamily(f"{METRIC_PREFIX}_events", "Events received and queued for "
                                     "Kafka, by type", labels=["type"])
        for kind, n in s.events_by_kind.items():
            events.add_metric([Kind.of(kind).data_type], n)
        yield events
        yield CounterMetricFamily(f"{METRIC_PREFIX}_frames", "WebSocket frames received",
                                  value=s.stats.frames)
        yield CounterMetricFamily(f"{METRIC_PREFIX}_frames_native", "WebSocket frames parsed and "
                                  "encoded whole by the compiled encoder (schemas._native)",
                                  value=s.native_frames)
        yield CounterMetricFamily(f"{METRIC_PREFIX}_reconnects", "Reconnection attempts",
                                  value=s.reconnects)
        errors = CounterMetricFamily(f"{METRIC_PREFIX}_parse_errors", "Malformed frames or events "
                                     "skipped, by reason", labels=["reason"])
        for reason, n in s.stats.malformed.items():
            errors.add_metric([reason], n)
        yield errors
        # what Kafka did not acknowledge is massive_fetcher_kafka_delivery_failed_total
        yield CounterMetricFamily(f"{METRIC_PREFIX}_encode_errors",
                                  "Records that could not be encoded", value=s.encode_errors)
        statuses = CounterMetricFamily(f"{METRIC_PREFIX}_status_messages", "Status messages from "
                                       "the server", labels=["status"])
        for status, n in s.stats.statuses.items():
            statuses.add_metric([status], n)
        yield statuses
        yield CounterMetricFamily(f"{METRIC_PREFIX}_gaps", "Disconnect windows recorded",
                                  value=len(s.gaps))
        yield CounterMetricFamily(f"{METRIC_PREFIX}_gaps_repaired", "Gaps repaired and marked so "
                                  "in the gaps file (this run's and earlier runs')",
                                  value=s.gaps_repaired)
        yield CounterMetricFamily(f"{METRIC_PREFIX}_gaps_unrepairable", "Gaps repaired only in "
                                  "part: marked unrepairable in the gaps file with the "
                                  "reason (e.g. wildcard symbols that never streamed)",
                                  value=s.gaps_unrepairable)
        yield CounterMetricFamily(f"{METRIC_PREFIX}_gap_repairs_failed", "Gap repair attempts that "
                                  "failed (retried with backoff, and at the next start)",
                                  value=s.gap_repairs_failed)
        yield GaugeMetricFamily(f"{METRIC_PREFIX}_connected", "1 while connected and authenticated",
                                value=1 if s.connected else 0)
        if s.lag_ns is not None:
            yield GaugeMetricFamily(f"{METRIC_PREFIX}_event_lag_seconds", "Receipt time minus "
                                    "event time of the newest event of the last frame",
                                    value=s.lag_ns / 1e9)
        if s.newest_event_ns:
            yield GaugeMetricFamily(f"{METRIC_PREFIX}_newest_event_timestamp_seconds",
                                    "Event time of the newest event received",
                                    value=s.newest_event_ns / 1e9)
