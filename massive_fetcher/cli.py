"""``massive-fetcher <subcommand>``: each part registers its own subcommand.

Every module in ``SUBCOMMANDS`` exposes ``register(subparsers)``, which adds one parser
whose ``func(args) -> int`` runs the part. Errors a user can fix (bad config, a missing
tool) are printed as one line and give a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from common.config import Config, ConfigError, load_config
from common.kafka import KAFKA_AUTH_EXIT_CODE, KafkaAuthError

SUBCOMMANDS: tuple[str, ...] = (
    "massive_fetcher.pipeline",  # run
    "services.cli",  # services
    "simulator.cli",  # simulator
    "producer.cli",  # producer
    "consumer.cli",  # consumer, replay
    "backfill.cli",  # backfill
    "schemas.cli",  # topics
    "massive_fetcher.doctor",  # doctor
    "massive_fetcher.tail",  # tail
    "massive_fetcher.migrate",  # migrate
)

DEFAULT_CONFIG_ENV = "MASSIVE_FETCHER_CONFIG"


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", metavar="FILE", default=os.environ.get(DEFAULT_CONFIG_ENV),
        help=f"YAML config file (default: ${DEFAULT_CONFIG_ENV}, else built-in defaults "
             "plus environment overrides)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="massive-fetcher",
        description="Stream Massive (Polygon.io) US-stock bars, trades and quotes into "
                    "MarketStore through Kafka.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only a part that is not in this tree at all is skipped (tests/test_cli.py
            # requires every one); an import error inside a part still fails loudly.
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"massive-fetcher {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KafkaAuthError as exc:
        print(f"massive-fetcher {args.command}: error: {exc}", file=sys.stderr)
        return KAFKA_AUTH_EXIT_CODE
    except KeyboardInterrupt:
        return 130
