"""``massive-fetcher <subcommand>``: each part registers its own subcommand.

Every module in ``SUBCOMMANDS`` exposes ``register(subparsers)``, which adds the parsers of
the commands it names there, each with ``func(args) -> int``. Only the chosen command's
module is imported (``--help`` and every other command stay fast: the parts import Kafka,
MarketStore and pandas clients). Errors a user can fix (bad config, bad flag, a service
that does not answer) are printed as one line with an exit code from ``EXIT_CODES``,
never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from common.config import Config, ConfigError, load_config
from common.logs import (
    FORMAT_ENV,
    LEVEL_ENV,
    LOG_FORMATS,
    LOG_LEVELS,
    Redactor,
    parse_log_format,
    parse_log_level,
    resolve_log_format,
    resolve_log_level,
    setup_logging,
)

PROG = "massive-fetcher"
DEFAULT_CONFIG_ENV = "MASSIVE_FETCHER_CONFIG"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_KAFKA_AUTH = 6  # common.kafka.KAFKA_AUTH_EXIT_CODE (not imported here: confluent-kafka)
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_FAILED: "failed: a check failed, a service did not answer, no rows, data not "
                 "acknowledged",
    EXIT_USAGE: "bad input: unknown flag or bad value, bad config file",
    EXIT_REFUSED: "refused: replay beside the live consumer group; `services status` with "
                  "a service stopped",
    EXIT_KAFKA_AUTH: "Kafka refused: the client's credentials (SASL, TLS)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM)",
}


@dataclass(frozen=True)
class Subcommand:
    module: str
    help: str


# The top-level listing comes from here, so that it needs no part imported; each part's
# register() adds the full parser of the commands it owns.
SUBCOMMANDS: dict[str, Subcommand] = {
    "run": Subcommand("massive_fetcher.pipeline", "run the whole pipeline locally "
                      "(services, simulator, producer, consumer)"),
    "services": Subcommand("services.cli", "start, inspect or stop local Kafka and "
                           "MarketStore (no Docker)"),
    "simulator": Subcommand("simulator.cli", "run a Massive-compatible WebSocket + REST "
                            "simulator"),
    "producer": Subcommand("producer.cli", "stream the Massive WebSocket (AM, T, Q) into "
                           "Kafka"),
    "consumer": Subcommand("consumer.cli", "consume the topics into MarketStore (one "
                           "consumer-group member)"),
    "replay": Subcommand("consumer.cli", "rebuild MarketStore from the topics with a fresh "
                         "consumer group"),
    "backfill": Subcommand("backfill.cli", "fetch history from the Massive REST API onto "
                           "the Kafka topics"),
    "topics": Subcommand("schemas.cli", "create or describe the Kafka topics"),
    "doctor": Subcommand("massive_fetcher.doctor", "check that Kafka, the topics, the "
                         "registry and MarketStore are ready"),
    "tail": Subcommand("massive_fetcher.tail", "print (or follow) the latest bars, trades "
                       "and quotes of a symbol from MarketStore"),
    "migrate": Subcommand("massive_fetcher.migrate", "print a MarketStore mkts.yml's Massive "
                          "plugin configuration as this project's YAML"),
}


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line: ``massive-fetcher tail: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def argtype(parse: Any, name: str) -> Any:
    """An argparse ``type`` from a parser raising ValueError with a readable message."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = name  # argparse names the type in its fallback message
    return convert


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{text} is not a positive whole number (>= 1)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text} is not a positive number (> 0)")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"{text} is not a port number (0..65535; 0 = any free port)")
    return value


def parse_instant(text: str) -> dt.datetime:
    """``2026-11-24``, ``2026-11-24T14:30``, ``...Z`` or ``...+01:00``; naive times are UTC."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or time (e.g. 2026-11-24 or "
                         "2026-11-24T14:30:00Z)") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


POSITIVE_INT = argtype(positive_int, "positive_int")
POSITIVE_FLOAT = argtype(positive_float, "positive_float")
PORT = argtype(port_number, "port")
INSTANT = argtype(parse_instant, "instant")
LOG_LEVEL = argtype(parse_log_level, "log_level")
LOG_FORMAT = argtype(parse_log_format, "log_format")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: absent after the subcommand keeps what was given before it
    parser.add_argument(
        "--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
        help=f"YAML config file (default: ${DEFAULT_CONFIG_ENV}, else built-in defaults "
             "plus environment overrides)")


def add_logging_arguments(parser: argparse.ArgumentParser,
                          default: Any = argparse.SUPPRESS) -> None:
    parser.add_argument(
        "--log-level", type=LOG_LEVEL, default=default, metavar="LEVEL",
        help=f"{', '.join(s.lower() for s in LOG_LEVELS)}, any case (default: $LOG_LEVEL, "
             "else info)")
    parser.add_argument(
        "--log-format", type=LOG_FORMAT, default=default, metavar="FORMAT",
        help=f"{' or '.join(LOG_FORMATS)} lines (default: $LOG_FORMAT, else text on a "
             "terminal, json otherwise)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None) or os.environ.get(DEFAULT_CONFIG_ENV))


def setup_cli_logging(args: argparse.Namespace, secrets: Sequence[str | None] = ()) -> None:
    """The command's logging, as ``--log-level`` / ``--log-format`` (or the env) ask."""
    setup_logging(getattr(args, "log_level", None), secrets=secrets,
                  fmt=getattr(args, "log_format", None))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("massive-fetcher")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _Registrar:
    """Stands in for the subparsers action: the listing's help comes from SUBCOMMANDS."""

    def __init__(self, sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        self._sub = sub
        self.added: list[str] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if name in SUBCOMMANDS:
            kwargs["help"] = SUBCOMMANDS[name].help
        self.added.append(name)
        return self._sub.add_parser(name, **kwargs)


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for sub in subs for child in dict.fromkeys(sub.choices.values())
            for leaf in _leaf_parsers(child)]


def _top_parser() -> tuple[Parser, argparse._SubParsersAction]:  # type: ignore[type-arg]
    parser = Parser(
        prog=PROG,
        description="Stream Massive (Polygon.io) US-stock bars, trades and quotes into "
                    "MarketStore through Kafka.",
        epilog="exit codes: " + "; ".join(f"{c} {m.split(':')[0]}"
                                          for c, m in EXIT_CODES.items()))
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--config", "-c", metavar="FILE", default=None,
        help=f"YAML config file, before or after the subcommand (default: "
             f"${DEFAULT_CONFIG_ENV})")
    add_logging_arguments(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, sub


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's full parser, or only ``only``'s (the others listed, not imported)."""
    parser, sub = _top_parser()
    registrar = _Registrar(sub)
    modules = list(dict.fromkeys(c.module for name, c in SUBCOMMANDS.items()
                                 if only is None or name == only))
    for module_name in modules:
        start = len(registrar.added)
        importlib.import_module(module_name).register(registrar)
        for name in registrar.added[start:]:
            for leaf in _leaf_parsers(sub.choices[name]):
                if "--log-level" not in leaf._option_string_actions:
                    add_logging_arguments(leaf)
    for name, command in SUBCOMMANDS.items():
        if name not in sub.choices:  # listed for --help; never parsed
            sub.add_parser(name, help=command.help, add_help=False)
    return parser


def _chosen_command(argv: list[str]) -> str:
    """The subcommand, found by a parser that imports no part (exits on --help/--version
    and on bad top-level flags)."""
    parser, sub = _top_parser()
    for name, command in SUBCOMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    known, _ = parser.parse_known_args(argv)
    return known.command


def _chosen_parser(parser: argparse.ArgumentParser,
                   args: argparse.Namespace) -> argparse.ArgumentParser:
    while subs := [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]:
        chosen = getattr(args, subs[0].dest, None)
        if chosen not in subs[0].choices:
            break
        parser = subs[0].choices[chosen]
    return parser


def _fail(command: str, message: str, code: int) -> int:
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen_command(argv)
    parser = build_parser(only=command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, so the line names the subcommand
        _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    for var, flag in ((LEVEL_ENV, args.log_level), (FORMAT_ENV, args.log_format)):
        if flag is not None:  # so that the parts `run` starts log as asked too
            os.environ[var] = flag
    try:
        args.log_level = resolve_log_level(args.log_level)
        args.log_format = resolve_log_format(args.log_format)
    except ValueError as exc:
        return _fail(command, str(exc), EXIT_USAGE)
    setup_cli_logging(args)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        return _fail(command, str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last net: one line (the traceback only when debugging)
        from common.kafka import KafkaAuthError  # confluent-kafka: only once it is loaded

        if isinstance(exc, KafkaAuthError):
            return _fail(command, str(exc), EXIT_KAFKA_AUTH)
        if args.log_level == "DEBUG":
            import traceback

            traceback.print_exc()
        redact = Redactor([os.environ.get("MASSIVE_API_KEY")])
        detail = redact(str(exc)).splitlines()[0] if str(exc) else ""
        return _fail(command, f"unexpected {type(exc).__name__}"
                     + (f": {detail}" if detail else "")
                     + " (rerun with --log-level debug for the traceback)", EXIT_FAILED)
