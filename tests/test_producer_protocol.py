"""Unit tests of producer.protocol with recorded frames (no network)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from producer.mapping import MappingError, record_from_ws_event
from producer.protocol import (
    AuthFailed,
    MassiveProtocol,
    State,
    StatusMessage,
    subscription_channels,
)

DATA = Path(__file__).parent / "data" / "producer"
KEY = "sekrit-key-123"


def _frames(name: str) -> list[bytes]:
    return [line.encode() for line in (DATA / name).read_text().splitlines()]


def _handshake(proto: MassiveProtocol) -> None:
    connected = b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]'
    assert proto.feed(connected) == []
    assert proto.take_outbox() == [json.dumps({"action": "auth", "params": KEY},
                                              separators=(",", ":"))]
    proto.feed('[{"ev":"status","status":"auth_success","message":"authenticated"}]')
    assert proto.state is State.AUTHENTICATED


def test_subscription_channels() -> None:
    assert subscription_channels(["bars", "trades", "quotes"], ["AAPL", "MSFT"]) == [
        "AM.AAPL", "AM.MSFT", "T.AAPL", "T.MSFT", "Q.AAPL", "Q.MSFT"]
    assert subscription_channels(["trades"], ["AAPL", "*"]) == ["T.*"]
    with pytest.raises(ValueError, match="unknown data type"):
        subscription_channels(["ticks"], ["AAPL"])
    with pytest.raises(ValueError, match="nothing to subscribe"):
        subscription_channels([], ["AAPL"])


def test_handshake_sends_auth_then_subscribe_and_tracks_acks() -> None:
    proto = MassiveProtocol(KEY, ["T.AAPL", "Q.AAPL"])
    assert proto.state is State.CONNECTING
    _handshake(proto)
    assert proto.take_outbox() == ['{"action":"subscribe","params":"T.AAPL,Q.AAPL"}']
    proto.feed(b'[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]')
    assert proto.state is State.AUTHENTICATED
    proto.feed(b'[{"ev":"status","status":"success","message":"subscribed to: Q.AAPL"}]')
    assert proto.state is State.SUBSCRIBED
    assert proto.authenticated
    assert proto.stats.statuses["success"] == 2


def test_data_before_all_acks_means_subscribed() -> None:
    proto = MassiveProtocol(KEY, ["T.AAPL", "Q.AAPL"])
    _handshake(proto)
    events = proto.feed(_frames("good_frames.jsonl")[3])
    assert [e["sym"] for e in events] == ["AAPL"]
    assert proto.state is State.SUBSCRIBED


def test_recorded_good_frames() -> None:
    proto = MassiveProtocol(KEY, ["T.*", "Q.*", "AM.*"])
    events = []
    for frame in _frames("good_frames.jsonl"):
        events.extend(proto.feed(frame))
    assert [e["ev"] for e in events] == ["T", "T", "T", "T", "Q", "Q", "AM", "AM", "T"]
    assert proto.stats.frames == 11
    assert proto.stats.events == 9
    assert proto.stats.malformed_total == 0
    assert proto.stats.statuses["max_connections"] == 1
    assert proto.last_status == StatusMessage(
        "max_connections", "Maximum number of websocket connections exceeded. You have "
        "reached the connection limit for your account.")


def test_auth_failed_is_fatal() -> None:
    proto = MassiveProtocol(KEY, ["T.AAPL"])
    proto.feed(b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]')
    with pytest.raises(AuthFailed, match="authentication failed"):
        proto.feed(b'[{"ev":"status","status":"auth_failed","message":"authentication failed"}]')
    assert proto.state is State.FAILED
    assert not proto.authenticated


def test_disconnect_statuses_are_logged_with_message(caplog: pytest.LogCaptureFixture) -> None:
    proto = MassiveProtocol(KEY, ["T.AAPL"])
    with caplog.at_level(logging.WARNING, logger="producer.protocol"):
        for status in ("max_connections", "slow_consumer", "force_disconnect", "error"):
            proto.feed(json.dumps([{"ev": "status", "status": status,
                                    "message": f"msg for {status}"}]))
    for status in ("max_connections", "slow_consumer", "force_disconnect", "error"):
        assert any(r.getMessage() == f"server status {status}: msg for {status}"
                   for r in caplog.records)


def test_recorded_bad_frames_are_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    proto = MassiveProtocol(KEY, ["T.*"])
    _handshake(proto)
    mapped = []
    with caplog.at_level(logging.WARNING, logger="producer.protocol"):
        for frame in _frames("bad_frames.jsonl"):
            for ev in proto.feed(frame):
                try:
                    mapped.append(record_from_ws_event(ev, 1))
                except MappingError as exc:
                    proto.reject(ev, "bad_event", str(exc))
    assert [r["id"] for _, r in mapped] == ["900", "901"]
    assert proto.stats.malformed_total == 18
    assert proto.stats.malformed["not_json"] == 1
    assert proto.stats.malformed["not_array"] == 2
    assert proto.stats.malformed["not_object"] == 3
    assert proto.stats.malformed["unknown_ev"] == 2
    assert proto.stats.malformed["no_ev"] == 1
    assert proto.stats.malformed["bad_status"] == 1
    assert proto.stats.malformed["bad_event"] == 8
    assert proto.stats.frames == 18
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 18
    assert all(len(r.input) <= 240 for r in warnings)  # type: ignore[attr-defined]


def test_long_malformed_frame_is_logged_truncated(caplog: pytest.LogCaptureFixture) -> None:
    proto = MassiveProtocol(KEY, ["T.*"])
    with caplog.at_level(logging.WARNING, logger="producer.protocol"):
        proto.feed(b"x" * 100_000)
    (record,) = caplog.records
    assert len(record.input) < 240  # type: ignore[attr-defined]
    assert "(+99800 bytes)" in record.input  # type: ignore[attr-defined]


def test_key_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    proto = MassiveProtocol(KEY, ["T.*"])
    with caplog.at_level(logging.DEBUG):
        _handshake(proto)
        proto.feed(b"garbage")
        with pytest.raises(AuthFailed):
            proto.feed(b'[{"ev":"status","status":"auth_failed","message":"nope"}]')
    assert KEY not in repr(proto)
    assert all(KEY not in r.getMessage() and KEY not in str(r.__dict__)
               for r in caplog.records)
