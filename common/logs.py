"""Structured logging: one JSON object per line, secrets redacted before anything is written."""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable

import orjson

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
# apiKey=... in a URL (a next_url, an aiohttp error) and Bearer tokens are always masked.
_URL_KEY = re.compile(r"(?i)(apikey=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")


class Redactor:
    """Masks known secrets and API-key-shaped URL parameters in a string."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _URL_KEY.sub(r"\1***", text)
        return _BEARER.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return self._redact(line)


def setup_logging(level: str = "INFO", secrets: Iterable[str | None] = (),
                  stream=None) -> None:
    """Route every logger to one JSON-lines handler on stderr that never prints a secret."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(Redactor(secrets)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "aiohttp.access", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
