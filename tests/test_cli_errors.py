"""No traceback, ever: every subcommand (enumerated from the parser, so a new one is
covered by itself) answers bad input with one line and a documented exit code."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from massive_fetcher import cli

ROOT = Path(__file__).resolve().parents[1]


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                  ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    return [leaf for sub in subs for name, child in sub.choices.items()
            for leaf in leaf_commands(child, (*path, name))]


LEAVES = leaf_commands(cli.build_parser())


def minimal_argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The command with a placeholder for each required positional (a ticker)."""
    positionals = [a for a in parser._actions if not a.option_strings
                   and a.nargs not in ("?", "*") and a.default is None]
    return [*path, *("AAPL" for _ in positionals)]


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "massive_fetcher", *argv],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "MASSIVE_API_KEY": "k", **(env or {})})


def assert_one_line(done: subprocess.CompletedProcess[str], command: str, code: int,
                    needle: str) -> None:
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    assert done.returncode == code, done.stderr
    assert code in cli.EXIT_CODES
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"massive-fetcher {command}: error:"), err
    assert needle in err, err


def test_every_subcommand_is_enumerated() -> None:
    commands = {path[0] for path, _ in LEAVES}
    assert commands == set(cli.SUBCOMMANDS)
    assert ("services", "up") in {path for path, _ in LEAVES}


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=lambda v: " ".join(v)
                         if isinstance(v, tuple) else "")
def test_bad_input_to_every_subcommand_is_one_line(tmp_path: Path, path: tuple[str, ...],
                                                   parser: argparse.ArgumentParser) -> None:
    argv = minimal_argv(path, parser)
    command = " ".join(path)
    assert_one_line(run_cli(*argv, "--no-such-flag"), command, 2, "--no-such-flag")
    assert_one_line(run_cli(*argv, "--log-level", "verbose"), command, 2, "'verbose'")
    config = tmp_path / "bad-date.yaml"
    config.write_text("massive:\n  query_start: {1Min: 2024-13-01}\n")
    # the config error is reported as the top command (the parts raise ConfigError)
    assert_one_line(run_cli(*argv, "--config", str(config)), path[0], 2,
                    f"{config}: massive.query_start.1Min: expected a date YYYY-MM-DD, "
                    "got '2024-13-01'")
    assert_one_line(run_cli(*argv, env={"LOG_LEVEL": "loud"}), path[0], 2, "$LOG_LEVEL")


@pytest.mark.parametrize(("argv", "needle"), [
    (["tail", "AAPL", "-n", "-5"], "-5 is not a positive whole number"),
    (["tail", "AAPL", "-n", "0"], "0 is not a positive whole number"),
    (["doctor", "--timeout", "-1"], "-1 is not a positive number"),
    (["topics", "--timeout", "0"], "0 is not a positive number"),
    (["consumer", "--metrics-port", "70000"], "not a port number"),
    (["tail", "AAPL", "--format", "xml"], "invalid choice: 'xml'"),
])
def test_bad_values_are_refused(argv: list[str], needle: str) -> None:
    assert_one_line(run_cli(*argv), argv[0], 2, needle)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tail_with_marketstore_down_is_one_line_exit_1() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/rpc"
    done = run_cli("tail", "AAPL", env={"MARKETSTORE_URL": url})
    assert_one_line(done, "tail", 1, f"no MarketStore answers at {url}")


def test_config_before_or_after_the_subcommand(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("consumer:\n  batch_max_events: 0\n")
    for command, argv in (("doctor", ["--config", str(config), "doctor"]),
                          ("doctor", ["doctor", "--config", str(config)]),
                          ("tail", ["-c", str(config), "tail", "X"])):
        assert_one_line(run_cli(*argv), command, 2, "consumer.batch_max_events")


def test_log_level_any_case_on_every_command() -> None:
    parser = cli.build_parser()
    for path, leaf in LEAVES:
        argv = minimal_argv(path, leaf)
        for value in ("debug", "DEBUG", "Warning"):
            args = parser.parse_args(["--log-level", "info", *argv, "--log-level", value])
            assert args.log_level == value.upper(), path
    # before the subcommand only: the top-level value stays
    args = parser.parse_args(["--log-level", "error", "producer"])
    assert args.log_level == "ERROR"


def test_the_kafka_auth_exit_code_is_the_documented_one() -> None:
    from common.kafka import KAFKA_AUTH_EXIT_CODE

    assert cli.EXIT_KAFKA_AUTH == KAFKA_AUTH_EXIT_CODE


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip().startswith("massive-fetcher 0.")


def test_the_lazy_listing_matches_what_the_parts_register() -> None:
    for name, command in cli.SUBCOMMANDS.items():
        parser = cli.build_parser(only=name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert callable(sub.choices[name].get_default("func")) or any(
            isinstance(a, argparse._SubParsersAction) for a in sub.choices[name]._actions), (
            f"{command.module} does not register {name!r}")


def test_help_imports_no_part() -> None:
    code = ("import sys\nfrom massive_fetcher.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pymarketstore', 'confluent_kafka', 'aiohttp', 'numpy')"
            " if m in sys.modules]\nprint(heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.stderr.strip() == "[]"
