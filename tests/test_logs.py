"""Log lines are JSON, one per event, and never carry the API key."""

from __future__ import annotations

import io
import logging

import orjson

from common.logs import Redactor, setup_logging


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
