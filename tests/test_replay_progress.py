"""``replay --until-caught-up`` shows a progress bar on a terminal (and none otherwise)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.configfile import write_config_file
from tests.support.testkit import (
    BASE_NS,
    bar,
    create_topics,
    make_config,
    publish,
    trades_stream,
    unique,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_replay_on_a_terminal_shows_progress_up_to_the_end_offsets(
        kafka_bootstrap: str, marketstore_url: str, tmp_path: Path) -> None:
    config = make_config(kafka_bootstrap, marketstore_url)
    create_topics(config)
    symbol = unique("RP")
    records = [("trade", t) for t in trades_stream(symbol, 300)]
    records += [("bar", bar(symbol, BASE_NS + i * 60 * 10**9)) for i in range(20)]
    publish(config, records)
    path = write_config_file(config, tmp_path / "replay.yml",
                             consumer={"group_id": config.consumer.group_id,
                                       "commit_delay_ms": 200, "batch_max_ms": 100})
    env = {k: v for k, v in os.environ.items() if k != "MARKETSTORE_URL"}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "massive_fetcher", "replay", "--config", str(path),
         "--until-caught-up", "--log-level", "warning"],
        cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    try:
        while True:  # until the child closes the terminal (EOF, or EIO on Linux)
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    screen = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    assert "Traceback" not in screen
    total = len(records)
    assert re.search(rf"replay .*{total}/{total} offsets", screen), screen[-2000:]
