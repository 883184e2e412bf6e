"""Logging for every part: JSON lines for machines, text lines for people at a terminal,
secrets redacted before anything is written."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TextIO

import orjson

LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: tuple[str, ...] = ("text", "json")
LEVEL_ENV = "LOG_LEVEL"
FORMAT_ENV = "LOG_FORMAT"

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
# apiKey=... in a URL (a next_url, an aiohttp error) and Bearer tokens are always masked.
_URL_KEY = re.compile(r"(?i)(apikey=)[^&\s\"']+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"']+")
# user:password@ (or a lone token@) in any scheme's URL: a broker, registry or proxy URL
# from the config can carry credentials.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"']+@")


class Redactor:
    """Masks known secrets, API-key-shaped URL parameters and URL credentials in a string."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _URL_KEY.sub(r"\1***", text)
        text = _URL_USERINFO.sub(r"\1***@", text)
        return _BEARER.sub(r"\1***", text)


def parse_log_level(text: str) -> str:
    """``debug``/``Info``/... -> the logging name; ValueError naming the choices otherwise."""
    level = text.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level (choose from "
                         f"{', '.join(s.lower() for s in LOG_LEVELS)})")
    return level


def parse_log_format(text: str) -> str:
    fmt = text.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"{text!r} is not a log format (choose from {', '.join(LOG_FORMATS)})")
    return fmt


def resolve_log_level(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The flag, else ``$LOG_LEVEL``, else INFO; ValueError for a bad value in either."""
    env = os.environ if env is None else env
    if flag:
        return parse_log_level(flag)
    value = env.get(LEVEL_ENV)
    if not value:
        return "INFO"
    try:
        return parse_log_level(value)
    except ValueError as exc:
        raise ValueError(f"${LEVEL_ENV}: {exc}") from None


def resolve_log_format(flag: str | None, stream: TextIO | None = None,
                       env: Mapping[str, str] | None = None) -> str:
    """The flag, else ``$LOG_FORMAT``, else text on a terminal and JSON lines otherwise."""
    env = os.environ if env is None else env
    if flag:
        return parse_log_format(flag)
    value = env.get(FORMAT_ENV)
    if value:
        try:
            return parse_log_format(value)
        except ValueError as exc:
            raise ValueError(f"${FORMAT_ENV}: {exc}") from None
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in record.__dict__.items()
            if key not in _RESERVED and not key.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z")


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(_extras(record))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        line = orjson.dumps(event, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return self._redact(line)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger: message key=value ...``: one line per event."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
                 f"{record.getMessage()}"]
        for key, value in _extras(record).items():
            text = value if isinstance(value, str) else orjson.dumps(
                value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self._redact(line)


def setup_logging(level: str | None = None, secrets: Iterable[str | None] = (),
                  stream: TextIO | None = None, fmt: str | None = None) -> None:
    """Route every logger to one handler on stderr that never prints a secret.

    ``level`` and ``fmt`` default to ``$LOG_LEVEL`` / ``$LOG_FORMAT``, else INFO and text on
    a terminal, JSON lines otherwise.
    """
    stream = stream or sys.stderr
    level = resolve_log_level(level)
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(redact) if resolve_log_format(fmt, stream) == "text"
                         else JsonFormatter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "aiohttp.access", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
