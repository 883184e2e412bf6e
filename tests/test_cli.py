"""The one console command: every part is a subcommand with a useful --help."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from massive_fetcher.cli import SUBCOMMANDS, build_parser

EXPECTED = ("run", "services", "simulator", "producer", "consumer", "replay", "backfill",
            "topics", "doctor", "tail")


def test_every_part_module_exists() -> None:
    modules = {command.module for command in SUBCOMMANDS.values()}
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
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


# every subcommand that reads the config, with the least it needs to get that far
CONFIG_READERS = (["run"], ["services", "status"], ["simulator"], ["producer"], ["consumer"],
                  ["replay"], ["backfill", "-trades", "-from", "trades=2024-01-02"],
                  ["topics"], ["doctor"], ["tail", "AAPL"])


def test_config_readers_cover_every_subcommand() -> None:
    assert {argv[0] for argv in CONFIG_READERS} == set(EXPECTED)


@pytest.mark.parametrize("argv", CONFIG_READERS, ids=lambda argv: argv[0])
def test_a_value_out_of_range_is_one_line_and_exit_2(tmp_path, argv: list[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("consumer:\n  batch_max_events: 0\n")
    proc = subprocess.run([sys.executable, "-m", "massive_fetcher", *argv, "--config",
                           str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MASSIVE_API_KEY": "k"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"massive-fetcher {argv[0]}: error: {path}: consumer.batch_max_events: "
                     "0 is out of range (allowed: >= 1)"], proc.stderr
    assert proc.stdout == ""
