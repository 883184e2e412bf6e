"""``massive-fetcher topics [describe|create]``: one line per topic."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from massive_fetcher.cli import POSITIVE_FLOAT, add_config_argument, config_from_args
from schemas.topics import TopicsError, check_topics, describe_topics, ensure_topics


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "topics",
        description="Describe (default) or create the bars, trades, quotes and dead-letter "
                    "topics: partitions, replication, retention (unlimited) and compression.")
    parser.add_argument("action", nargs="?", choices=("describe", "create"), default="describe")
    parser.add_argument("--timeout", type=POSITIVE_FLOAT, default=15.0, metavar="SECONDS",
                        help="how long to wait for the broker (default 15)")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        created = set(ensure_topics(config, args.timeout)) if args.action == "create" else set()
        infos = describe_topics(config, args.timeout)
        problems = check_topics(config, args.timeout, infos)
    except TopicsError as exc:
        print(f"massive-fetcher topics: error: {exc}", file=sys.stderr)
        return 1
    for info in infos:
        prefix = "created " if info.name in created else ""
        print(prefix + info.line())
    missing = [i.name for i in infos if not i.exists]
    for problem in problems:
        if not any(problem.startswith(f"topic {name} ") for name in missing):
            print(f"warning: {problem}")
    if missing:
        print(f"{len(missing)} topic(s) missing: run `massive-fetcher topics create`")
    return 1 if missing else 0
