"""The Massive WebSocket protocol as a state machine, without any I/O.

The session feeds it every raw frame it receives; it parses the frame (orjson), handles
the control messages (``ev: status``), says what to send next (auth after ``connected``,
the subscription after ``auth_success``) and hands back the data events (AM/T/Q objects)
for mapping. Malformed frames and items are counted, logged truncated, and skipped: one
bad event never costs the rest of its frame or the stream. Nothing here ever logs the
API key: it only appears in the auth message, which is never logged.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.spec import Kind

log = logging.getLogger(__name__)

LOG_PREVIEW_CHARS = 200
# Malformed input is logged one by one up to this many, then every Nth, so a broken
# feed cannot flood the log while the counters still tell the whole story.
_MALFORMED_LOG_FIRST = 50
_MALFORMED_LOG_EVERY = 10_000

# A tuple, not a set: `in` then compares instead of hashing, so an unhashable ev is no crash.
DATA_EVS: tuple[str, ...] = tuple(k.ev for k in Kind)
OK_STATUSES: frozenset[str] = frozenset({"connected", "auth_success", "success"})
# Statuses a server sends before it drops us; logged with their message.
DISCONNECT_STATUSES: frozenset[str] = frozenset(
    {"max_connections", "slow_consumer", "force_disconnect", "error"})


class State(enum.Enum):
    CONNECTING = "connecting"        # socket open, waiting for "connected"
    CONNECTED = "connected"          # auth sent, waiting for the answer
    AUTHENTICATED = "authenticated"  # subscribe sent, waiting for acks or data
    SUBSCRIBED = "subscribed"        # every channel acked, or data is flowing
    FAILED = "failed"                # auth failed: fatal, do not reconnect


class AuthFailed(Exception):
    """The server refused the API key; retrying with the same key cannot help."""


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """One ``{"ev":"status","status":...,"message":...}`` control message."""

    status: str
    message: str

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> StatusMessage:
        status = obj.get("status")
        message = obj.get("message", "")
        if type(status) is not str or not status:
            raise ValueError("status message without a string 'status'")
        if type(message) is not str:
            message = str(message)
        return cls(status, message)

    @property
    def is_ok(self) -> bool:
        return self.status in OK_STATUSES

    @property
    def is_fatal(self) -> bool:
        return self.status == "auth_failed"


@dataclass
class ProtocolStats:
    frames: int = 0
    events: int = 0
    malformed: Counter[str] = field(default_factory=Counter)  # reason -> count
    statuses: Counter[str] = field(default_factory=Counter)   # status -> count

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


def subscription_channels(data_types: Iterable[str], symbols: Iterable[str]) -> list[str]:
    """``EV.SYMBOL`` for every data type x symbol; ``*`` is Massive's wildcard."""
    syms = [s.strip() for s in symbols if s.strip()]
    if "*" in syms:
        syms = ["*"]
    channels: list[str] = []
    for data_type in data_types:
        try:
            ev = Kind.of_data_type(data_type).ev
        except KeyError:
            raise ValueError(f"unknown data type {data_type!r} "
                             f"(expected one of {', '.join(k.data_type for k in Kind)})") from None
        channels.extend(f"{ev}.{sym}" for sym in syms)
    if not channels:
        raise ValueError("nothing to subscribe to: no data types or no symbols")
    return channels


def preview(raw: Any) -> str:
    """A short printable form of untrusted input for a log line."""
    if isinstance(raw, bytes | bytearray | memoryview):
        total = len(raw)
        text = bytes(raw[:LOG_PREVIEW_CHARS]).decode("utf-8", "replace")
        if total > LOG_PREVIEW_CHARS:
            return text + f"...(+{total - LOG_PREVIEW_CHARS} bytes)"
        return text
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = orjson.dumps(raw, default=repr).decode()
        except TypeError:
            text = repr(raw)
    if len(text) > LOG_PREVIEW_CHARS:
        text = text[:LOG_PREVIEW_CHARS] + f"...(+{len(text) - LOG_PREVIEW_CHARS} chars)"
    return text


class MassiveProtocol:
    """One connection's protocol state. Create a new one for every (re)connection."""

    def __init__(self, api_key: str, channels: Sequence[str],
                 stats: ProtocolStats | None = None) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self._api_key = api_key
        self.channels = list(channels)
        self.stats = stats or ProtocolStats()
        self.state = State.CONNECTING
        self.acked: set[str] = set()
        self.last_status: StatusMessage | None = None
        # Messages to send, in order; the session drains it after every feed().
        self.outbox: list[str] = []

    def __repr__(self) -> str:  # keeps the key out of any accidental log of this object
        return f"MassiveProtocol(state={self.state.value}, channels={len(self.channels)})"

    # -- messages we send --------------------------------------------------------------

    def auth_message(self) -> str:
        return orjson.dumps({"action": "auth", "params": self._api_key}).decode()

    def subscribe_message(self) -> str:
        return orjson.dumps({"action": "subscribe", "params": ",".join(self.channels)}).decode()

    def take_outbox(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out

    @property
    def authenticated(self) -> bool:
        return self.state in (State.AUTHENTICATED, State.SUBSCRIBED)

    # -- frames we receive -------------------------------------------------------------

    def feed(self, frame: bytes | str) -> list[dict[str, Any]]:
        """Parse one frame; handle its status messages; return its data events in order.

        Raises :class:`AuthFailed` on ``auth_failed`` (after handling what preceded it).
        """
        self.stats.frames += 1
        try:
            items = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self.reject(frame, "not_json", "frame is not JSON")
            return []
        if type(items) is not list:
            self.reject(frame, "not_array", "frame is not a JSON array")
            return []
        events: list[dict[str, Any]] = []
        append = events.append
        for item in items:
            if type(item) is dict:
                ev = item.get("ev")
                if ev in DATA_EVS:
                    append(item)
                    continue
                if ev == "status":
                    self._on_status(item)
                    continue
                if ev is None:
                    self.reject(item, "no_ev", "event without 'ev'")
                else:
                    self.reject(item, "unknown_ev", "unknown event type")
            else:
                self.reject(item, "not_object", "frame item is not a JSON object")
        if events:
            self.stats.events += len(events)
            if self.state is State.AUTHENTICATED:
                # Data flowing means the subscription is live even if acks were partial.
                self.state = State.SUBSCRIBED
        return events

    def count_data_frame(self, events: int) -> None:
        """Account for a frame of data events that was parsed elsewhere (the native frame
        encoder), as :meth:`feed` would have; only valid once SUBSCRIBED."""
        self.stats.frames += 1
        self.stats.events += events

    def reject(self, raw: Any, reason: str, detail: str) -> None:
        """Count and log one malformed frame or item (also used for mapping errors)."""
        self.stats.malformed[reason] += 1
        n = self.stats.malformed_total
        if n <= _MALFORMED_LOG_FIRST or n % _MALFORMED_LOG_EVERY == 0:
            log.warning("skipped malformed input: %s", detail,
                        extra={"reason": reason, "input": preview(raw),
                               "malformed_total": n})

    def _on_status(self, item: dict[str, Any]) -> None:
        try:
            msg = StatusMessage.parse(item)
        except ValueError as exc:
            self.reject(item, "bad_status", str(exc))
            return
        self.last_status = msg
        self.stats.statuses[msg.status] += 1
        status = msg.status
        if status == "connected":
            if self.state is State.CONNECTING:
                self.state = State.CONNECTED
                self.outbox.append(self.auth_message())
            log.info("websocket connected", extra={"server_message": msg.message})
        elif status == "auth_success":
            if self.state in (State.CONNECTING, State.CONNECTED):
                self.state = State.AUTHENTICATED
                self.outbox.append(self.subscribe_message())
            log.info("authenticated", extra={"server_message": msg.message})
        elif status == "auth_failed":
            self.state = State.FAILED
            raise AuthFailed(msg.message or "authentication failed")
        elif status == "success":
            prefix = "subscribed to: "
            if msg.message.startswith(prefix):
                self.acked.add(msg.message[len(prefix):].strip())
                if self.state is State.AUTHENTICATED and self.acked.issuperset(self.channels):
                    self.state = State.SUBSCRIBED
                    log.info("subscribed", extra={"channels": len(self.channels)})
        elif status in DISCONNECT_STATUSES:
            log.warning("server status %s: %s", status, msg.message,
                        extra={"status": status, "server_message": msg.message})
        else:
            log.warning("unexpected server status %s: %s", status, msg.message,
                        extra={"status": status, "server_message": msg.message})
