"""Log lines are JSON, one per event, and never carry the API key."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from common.logs import (
    Redactor,
    parse_log_level,
    resolve_log_format,
    resolve_log_level,
    setup_logging,
)


def test_json_lines_with_extra_fields_and_key_redacted() -> None:
    stream = io.StringIO()
    setup_logging("INFO", secrets=["KEY-123456"], stream=stream)
    log = logging.getLogger("test.logs")
    log.info("connecting with KEY-123456", extra={"url": "https://x/v3?cursor=a&apiKey=KEY-123456"})
    log.warning("next %s", "https://h/v3/trades?apiKey=other-key&cursor=Zz")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert first["level"] == "info" and first["logger"] == "test.logs"
    assert first["msg"] == "connecting with ***"
    assert first["url"] == "https://x/v3?cursor=a&apiKey=***"
    assert "other-key" not in lines[1] and second["msg"].endswith("apiKey=***&cursor=Zz")
    assert "KEY-123456" not in stream.getvalue()


def test_redactor_masks_bearer_tokens() -> None:
    assert Redactor()("Authorization: Bearer abc.def") == "Authorization: Bearer ***"


def test_redactor_masks_credentials_inside_urls() -> None:
    redact = Redactor()
    assert redact("GET https://user:s3cret@registry.example/subjects failed") == (
        "GET https://***@registry.example/subjects failed")
    assert redact("sasl to kafka://token@broker:9092 and http://h/x@y") == (
        "sasl to kafka://***@broker:9092 and http://h/x@y")
    assert redact('{"url":"http://a:b@h:8081"}') == '{"url":"http://***@h:8081"}'


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_lines_on_a_terminal_json_elsewhere_or_as_asked() -> None:
    tty = _Terminal()
    setup_logging("info", secrets=["KEY-1"], stream=tty)
    logging.getLogger("test.text").warning("using KEY-1 at %s", "https://u:p@h/",
                                           extra={"port": 9102, "types": ["bars"]})
    line = tty.getvalue().strip()
    assert "WARNING test.text: using *** at https://***@h/ port=9102 types=[\"bars\"]" in line
    assert not line.startswith("{") and len(line.splitlines()) == 1

    forced = _Terminal()
    setup_logging("INFO", stream=forced, fmt="json")
    logging.getLogger("test.text").info("hello")
    assert orjson.loads(forced.getvalue())["msg"] == "hello"

    pipe = io.StringIO()
    setup_logging("INFO", stream=pipe)
    logging.getLogger("test.text").info("hello")
    assert orjson.loads(pipe.getvalue())["msg"] == "hello"


def test_log_level_any_case_from_the_flag_or_the_environment() -> None:
    assert parse_log_level("debug") == "DEBUG" and parse_log_level(" Warning ") == "WARNING"
    with pytest.raises(ValueError, match="'verbose' is not a log level"):
        parse_log_level("verbose")
    assert resolve_log_level(None, {}) == "INFO"
    assert resolve_log_level(None, {"LOG_LEVEL": "error"}) == "ERROR"
    assert resolve_log_level("debug", {"LOG_LEVEL": "error"}) == "DEBUG"
    with pytest.raises(ValueError, match=r"\$LOG_LEVEL: 'loud'"):
        resolve_log_level(None, {"LOG_LEVEL": "loud"})
    assert resolve_log_format(None, io.StringIO(), {"LOG_FORMAT": "TEXT"}) == "text"
