"""The real ``promtool`` (Prometheus's checker), for tests of the monitoring files.

Prometheus's own releases are on GitHub; Debian packages it, so where ``promtool`` is not on
PATH it is unpacked once from the ``prometheus`` package (``apt-get download`` + ``dpkg -x``)
into the project's cache, beside the Kafka and MarketStore builds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from common.config import ServicesConfig
from services.paths import cache_root


def promtool() -> Path | None:
    """The path of a working ``promtool``, or None when neither PATH nor apt has one."""
    found = shutil.which("promtool")
    if found:
        return Path(found)
    root = cache_root(ServicesConfig()) / "prometheus" / "root"
    binary = root / "usr" / "bin" / "promtool"
    if not binary.exists() and shutil.which("apt-get") and shutil.which("dpkg"):
        _unpack(root)
    return binary if binary.exists() else None


def _unpack(root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        got = subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp,
                             capture_output=True, timeout=300)
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if got.returncode != 0 or not debs:
            return
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True, timeout=300)
        if not root.exists():
            unpacked.rename(root)
