"""``massive-fetcher consumer`` and ``massive-fetcher replay``.

``consumer`` runs one member of the consumer group ``consumer.group_id`` (start N of them to
share the partitions). ``replay`` rebuilds MarketStore from the topics with a fresh group: from
the earliest offsets, or from ``--from-timestamp``, optionally only some data types and symbols;
into an empty database or a populated one (exactly-once writes make the second a no-op), but
never beside the live group on its MarketStore (``consumer.replayguard``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING

from common.config import DATA_TYPES, Config
from massive_fetcher.cli import (
    EXIT_REFUSED,
    PORT,
    POSITIVE_FLOAT,
    UsageError,
    add_config_argument,
    config_from_args,
    parse_instant,
    setup_cli_logging,
)

if TYPE_CHECKING:  # the parts are imported when a command runs: --help stays fast
    from common.metrics import MetricsServer
    from consumer.service import ConsumerService, Options

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "consumer",
        description="Consume bars, trades and quotes from Kafka into MarketStore, exactly once "
                    "in the database; offsets are committed only once writes are durable.")
    add_config_argument(p)
    _common(p)
    p.set_defaults(func=run_consumer)

    r = subparsers.add_parser(
        "replay",
        description="Replay the topics into MarketStore with a new consumer group (from the "
                    "earliest offsets or a timestamp); writes are exactly once, so replaying "
                    "into a populated database changes nothing. Refused (exit code "
                    f"{EXIT_REFUSED}) while the live group consumer.group_id has members, "
                    "unless --target-marketstore names another MarketStore.")
    add_config_argument(r)
    _common(r)
    r.add_argument("--group", help="consumer group id (default: <consumer.group_id>-replay-"
                                   "<unix time>, a fresh group)")
    r.add_argument("--from-timestamp", metavar="ISO",
                   help="start at the first offsets at or after this time (e.g. "
                        "2026-11-24T14:30:00Z; a fresh group only)")
    r.add_argument("--types", default=",".join(DATA_TYPES),
                   help="comma-separated data types to replay: bars,trades,quotes")
    r.add_argument("--symbols", help="comma-separated tickers to replay (default: all)")
    r.add_argument("--until-caught-up", action="store_true",
                   help="exit once everything up to the end offsets at start is committed")
    r.add_argument("--target-marketstore", metavar="URL",
                   help="rebuild into this MarketStore (http://host:port/rpc), not "
                        "marketstore.url; allowed while the live group runs (swap it in "
                        "afterwards)")
    r.add_argument("--group-check-timeout", type=POSITIVE_FLOAT, default=30.0,
                   metavar="SECONDS",
                   help="how long to wait for Kafka to say whether the live group runs "
                        "(30); without an answer, no replay")
    r.set_defaults(func=run_replay)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=PORT, metavar="PORT",
                   help="serve /metrics and /healthz here (consumer default: "
                        "metrics.consumer_port; replay default: 0; 0 picks a free port); "
                        "give each consumer on one host its own, or 0")
    p.add_argument("--client-id", default=None, help="Kafka client.id (default: per command)")


def parse_timestamp_ms(text: str) -> int:
    try:
        return int(parse_instant(text).timestamp() * 1000)
    except ValueError as exc:
        raise UsageError(f"--from-timestamp {exc}") from None


def parse_types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in types if t not in DATA_TYPES]
    if bad or not types:
        raise UsageError(f"--types: {','.join(bad) or text!r} not in {','.join(DATA_TYPES)}")
    return types


def _serve(config: Config, service: ConsumerService, port: int) -> MetricsServer | None:
    from common.metrics import MetricsServer

    m = config.metrics
    if not m.enabled:
        return None
    try:
        server = MetricsServer(service.registry, m.host, port, health=service.health).start()
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on {m.host}:{port}: {exc}") from None
    log.info("metrics served", extra={"url": f"http://{m.host}:{server.port}/metrics"})
    return server


def _run(config: Config, options: Options, args: argparse.Namespace, metrics_port: int) -> int:
    from common.runtime import tune_for_throughput
    from consumer.service import ConsumerService

    setup_cli_logging(args, secrets=config.secrets())
    service = ConsumerService(config, options)
    service.install_signal_handlers()
    server = _serve(config, service, metrics_port)
    tune_for_throughput()
    display = None
    if options.until_caught_up and sys.stderr.isatty():
        from consumer.progress import ReplayProgress

        display = ReplayProgress(service.replay_progress).start()
    try:
        log.info("consumer starting", extra={"group": options.group_id,
                                             "types": list(options.data_types)})
        return service.run()
    finally:
        if display is not None:
            display.stop()
        if server is not None:
            server.stop()


def run_consumer(args: argparse.Namespace) -> int:
    from consumer.service import Options

    config = config_from_args(args)
    options = Options(group_id=config.consumer.group_id,
                      client_id=args.client_id or "massive-fetcher-consumer")
    port = config.metrics.consumer_port if args.metrics_port is None else args.metrics_port
    return _run(config, options, args, port)


def run_replay(args: argparse.Namespace) -> int:
    from consumer.buckets import RecordError
    from consumer.replayguard import REFUSED_EXIT_CODE, ReplayRefused, replay_config
    from consumer.service import Options, consumed_symbols

    config = config_from_args(args)
    target = args.target_marketstore
    if target is not None and not target.startswith(("http://", "https://")):
        raise UsageError(f"--target-marketstore {target!r} is not an http(s):// URL")
    if target is not None and args.group == config.consumer.group_id:
        # as a member of the live group it would take partitions and commit offsets for it
        raise UsageError(f"--group {args.group} is the live group; a rebuild into "
                         "--target-marketstore needs a group of its own")
    try:
        symbols = consumed_symbols(s.strip() for s in args.symbols.split(",")
                                   if s.strip()) if args.symbols else None
    except RecordError as exc:
        raise UsageError(f"--symbols: {exc}") from None
    options = Options(
        group_id=args.group or f"{config.consumer.group_id}-replay-{int(time.time())}",
        data_types=parse_types(args.types), symbols=symbols,
        start_timestamp_ms=parse_timestamp_ms(args.from_timestamp)
        if args.from_timestamp else None,
        until_caught_up=args.until_caught_up,
        client_id=args.client_id or "massive-fetcher-replay")
    try:
        config = replay_config(config, target, args.group_check_timeout)
    except ReplayRefused as exc:
        print(f"massive-fetcher replay: refused: {exc}", file=sys.stderr)
        return REFUSED_EXIT_CODE
    # a replay usually runs beside the live consumer, which holds consumer_port
    return _run(config, options, args, args.metrics_port or 0)
