"""``massive-fetcher services up | status | down``: local Kafka, MarketStore and registry."""

from __future__ import annotations

import argparse

from massive_fetcher.cli import POSITIVE_FLOAT, UsageError, add_config_argument, config_from_args
from services.native import DEFAULT_SERVICES, SERVICE_NAMES, NativeServices

DESCRIPTION = """\
Run Apache Kafka (KRaft, jars from Maven Central; one node, or --brokers 3 for a cluster)
and MarketStore (built with Go) as local processes on 127.0.0.1, configured by the
services: section of the config file; `up registry` adds a Confluent-compatible schema
registry (Apicurio Registry from Maven Central, needs Java 21+; its URL is the
schema_registry.url to use).
Downloads and builds are cached in $XDG_CACHE_HOME/massive-fetcher (~/.cache); data, logs
and pid files live in $XDG_STATE_HOME/massive-fetcher (~/.local/state). Needs java, and
mvn / go until the cache is warm."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "services",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=description)
        add_config_argument(sub)
        sub.add_argument("names", nargs="*", metavar="SERVICE",
                         help=f"only these services ({', '.join(SERVICE_NAMES)}, or one "
                              f"cluster node such as kafka-2; default: "
                              f"{' and '.join(DEFAULT_SERVICES)}, and for status/down the "
                              "registry too when it runs)")
        sub.add_argument("--brokers", type=int, metavar="N", default=None,
                         help="Kafka nodes: 1, or 3 for a local cluster (replication 3, "
                              "min.insync.replicas 2); default: as many as `up` last "
                              "created in the state dir, else 1")
        sub.set_defaults(func=run)
        return sub

    up = action("up", "start the services and wait until they answer",
                "Start Kafka and MarketStore unless already running (building or downloading "
                "them into the cache on first use) and return once Kafka answers a metadata "
                "request and MarketStore answers RPC.")
    up.add_argument("--timeout", type=POSITIVE_FLOAT, default=180.0, metavar="SECONDS",
                    help="how long to wait for each service to answer (default: 180)")
    action("status", "show whether each service runs (exit 3 when one does not)",
           "One line per service: running or stopped, pid and address. Exit code 0 when "
           "every service runs, 3 otherwise.")
    action("down", "stop the services started by `up`",
           "Stop exactly the processes `up` started (SIGTERM, then SIGKILL after a grace "
           "period), found by their pid files in the state dir.")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    handle = NativeServices(config.services, brokers=args.brokers,
                            startup_timeout_s=getattr(args, "timeout", 180.0))
    unknown = [name for name in args.names if name not in handle.names()]
    if unknown:
        raise UsageError(f"unknown service {unknown[0]!r} (choose from "
                         f"{', '.join(handle.names())})")
    names = list(dict.fromkeys(args.names)) or None
    if args.action == "up":
        results = handle.up(names, report=lambda line: print(line, flush=True))
        started = {result.name for result in results}
        exports = {"KAFKA_BOOTSTRAP_SERVERS": handle.kafka_bootstrap,
                   "MARKETSTORE_URL": handle.marketstore_url}
        if "registry" in started:
            exports["SCHEMA_REGISTRY_URL"] = handle.registry_url
        print("export " + " ".join(f"{k}={v}" for k, v in exports.items()))
        print(f"logs and data: {handle.state_dir}")
        return 0
    if args.action == "down":
        handle.down(names, report=print)
        return 0
    statuses = handle.status(names)
    for status in statuses:
        print(status.line())
    return 0 if all(status.running for status in statuses) else 3
