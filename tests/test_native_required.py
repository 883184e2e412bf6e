"""A missing compiled module is a warning by default and an error where it is required."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import native

ROOT = Path(__file__).resolve().parents[1]
# schemas._native blocked as if it had not been built
WITHOUT_BUILD = ("import sys; sys.modules['schemas._native'] = None; "
                 "import schemas.native as n; print('native', n.native, n.status()[0])")


def _run(require: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != native.REQUIRE_ENV}
    if require is not None:
        env[native.REQUIRE_ENV] = require
    return subprocess.run([sys.executable, "-c", WITHOUT_BUILD], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("require", [None, "0"])
def test_without_the_build_the_python_paths_run_with_a_warning(require: str | None) -> None:
    done = _run(require)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "native None False"
    assert "schemas._native was not built" in done.stderr


def test_required_and_missing_is_an_import_error_naming_the_fix() -> None:
    done = _run("1")
    assert done.returncode == 1
    assert "NativeMissing: schemas._native was not built" in done.stderr
    assert "install a C compiler" in done.stderr and native.REQUIRE_ENV in done.stderr


def test_the_status_line_says_active_when_built() -> None:
    active, line = native.status()
    assert active == (native.native is not None)
    assert line.startswith("active" if active else "inactive")


REFERENCE_TIER = (
    "import sys; sys.modules['schemas._native'] = None\n"
    "import orjson\n"
    "from common.config import Config\n"
    "from schemas.codec import make_codec\n"
    "from producer.nativeframes import NativeFrames\n"
    "from backfill.nativepages import NativePages\n"
    "codec = make_codec(Config())\n"
    "frames = NativeFrames(codec, {'bar': 'b', 'trade': 't', 'quote': 'q'})\n"
    "pages = NativePages(codec)\n"
    "ev = {'ev': 'T', 'sym': 'A', 'i': '1', 'x': 1, 'p': 1.5, 's': 1, 't': 1, 'q': 1}\n"
    "print(frames.enabled, frames.encode(orjson.dumps([ev]), 1), pages.kinds,\n"
    "      pages.decoder('trade', 'A'))\n")


def test_without_the_build_the_encoders_leave_everything_to_the_reference_path() -> None:
    env = {k: v for k, v in os.environ.items() if k != native.REQUIRE_ENV}
    done = subprocess.run([sys.executable, "-c", REFERENCE_TIER], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "None", "()", "None"]
