"""The one console command: every part is a subcommand with a useful --help."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from massive_fetcher.cli import SUBCOMMANDS, build_parser

EXPECTED = ("run", "services", "simulator", "producer", "consumer", "replay", "backfill",
            "topics", "doctor", "tail")


def test_every_part_module_exists() -> None:
    missing = [name for name in SUBCOMMANDS if importlib.util.find_spec(name) is None]
    assert not missing, f"subcommand modules missing: {missing}"


def test_every_subcommand_is_registered() -> None:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert set(EXPECTED) <= set(choices), sorted(set(EXPECTED) - set(choices))


@pytest.mark.parametrize("command", EXPECTED)
def test_help_describes_the_subcommand(command: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "massive_fetcher", command, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"usage: massive-fetcher {command}" in proc.stdout
    # more than a bare usage line: a description or options with help text
    assert len(proc.stdout.splitlines()) > 4
