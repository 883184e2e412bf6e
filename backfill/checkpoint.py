"""Resumable record of completed backfill windows: append-only JSON lines, fsynced.

One line per window that is done, i.e. whose records Kafka has acknowledged. Lines carry a
key derived from the settings that decide what "done" means (REST base URL, adjusted,
Kafka cluster and topics), so a run against another cluster or topic starts afresh. A line
cut short by kill -9 is ignored on load.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import orjson

from common.config import Config

log = logging.getLogger("backfill.checkpoint")

FILE_NAME = "backfill-checkpoint.jsonl"


def default_state_dir(config: Config) -> Path:
    if config.services.state_dir:
        return Path(config.services.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state")
    return Path(base) / "massive-fetcher"


def checkpoint_key(config: Config, adjusted: bool) -> str:
    """A short hash of what makes a completed window valid for a later run."""
    topics = config.kafka.topics
    material = orjson.dumps({
        "base_url": config.massive.base_url.rstrip("/"),
        "adjusted": adjusted,
        "bootstrap": config.kafka.bootstrap_servers,
        "topics": [topics.bars, topics.trades, topics.quotes],
        "registry": config.schema_registry.url,
    }, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(material).hexdigest()[:16]


class Checkpoint:
    """Completed window ids for one key, persisted in ``<state_dir>/backfill-checkpoint.jsonl``."""

    def __init__(self, state_dir: str | os.PathLike[str], key: str) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.key = key
        self._done: set[str] = set()
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        # append mode: concurrent runs never overwrite each other's lines
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        bad = 0
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1  # a write cut short by a kill: that window is simply redone
                continue
            if isinstance(entry, dict) and entry.get("key") == self.key:
                window = entry.get("window")
                if isinstance(window, str):
                    self._done.add(window)
        if bad:
            log.warning("ignored %d unreadable checkpoint line(s) in %s", bad, self.path)
        if data and not data.endswith(b"\n"):
            # start our lines on a fresh line after a torn write
            with open(self.path, "ab") as fh:
                fh.write(b"\n")

    def __contains__(self, window_id: str) -> bool:
        return window_id in self._done

    def __len__(self) -> int:
        return len(self._done)

    def mark_done(self, entries: list[tuple[str, int]]) -> None:
        """Persist ``(window_id, records)`` pairs; returns once they are on disk."""
        if not entries:
            return
        now = time.time()
        payload = b"".join(
            orjson.dumps({"key": self.key, "window": wid, "records": n, "at": round(now, 3)})
            + b"\n" for wid, n in entries)
        with self._lock:
            os.write(self._fd, payload)
            os.fsync(self._fd)
            self._done.update(wid for wid, _ in entries)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
