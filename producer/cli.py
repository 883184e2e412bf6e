"""``massive-fetcher producer``: stream the Massive WebSocket into Kafka.

Start-up order matters: the API key and Kafka are checked first (a clear error beats a
retry loop against a broker that is not there), topics are created when missing, then
metrics, then the session. The in-process backfill (``massive.query_start``) and gap
repair (``producer.gap_repair``) come from ``backfill.inprocess`` when that module
exists: ``run_inprocess_backfill(config, publisher, stop_event)`` runs as a background
task of the session and ``repair_gap(config, publisher, gap)`` is called for every
recorded gap (and, at start, for every gap earlier runs left unrepaired); both share
the event loop and must never block the live read loop, and both produce through a
Kafka producer of their own, so that waiting for their acknowledgements never waits for
the live stream's queue. ``repair_gap`` returns the records published or a
``producer.gaps.RepairOutcome`` naming what it could not repair.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from typing import Any

from common.config import Config, ConfigError
from common.metrics import MetricsServer, new_registry
from massive_fetcher.cli import PORT, add_config_argument, config_from_args, setup_cli_logging
from producer.gaps import Gap, RepairOutcome
from producer.protocol import subscription_channels
from producer.publisher import HISTORY_PRODUCER_DEFAULTS, Publisher, PublisherError
from producer.session import EXIT_KAFKA_FAILED, ProducerSession
from schemas.codec import RegistryError, make_codec

log = logging.getLogger("producer")

EXIT_STARTUP_FAILED = 1
# The schema registry is unreachable or refused one of our schemas (e.g. incompatible):
# checked before anything is produced.
EXIT_REGISTRY_FAILED = 6
FLUSH_TIMEOUT_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "producer",
        description="Connect to massive.ws_server, subscribe to massive.data_types x "
                    "massive.symbols, publish every event to Kafka (Avro, key = symbol), "
                    "reconnect with backoff, record every disconnect window for gap repair.")
    add_config_argument(parser)
    parser.add_argument("--metrics-port", type=PORT, metavar="PORT",
                        help="serve /metrics and /healthz here (default: "
                             "metrics.producer_port; 0 picks a free port)")
    parser.add_argument("--gaps-file", metavar="FILE",
                        help="where disconnect windows are appended (default: "
                             "producer.gaps_file)")
    parser.set_defaults(func=run)


def _apply_flags(config: Config, args: argparse.Namespace) -> Config:
    if args.metrics_port is not None:
        config = config.replace(metrics=dataclasses.replace(
            config.metrics, producer_port=args.metrics_port))
    if args.gaps_file:
        config = config.replace(producer=dataclasses.replace(
            config.producer, gaps_file=args.gaps_file))
    return config


def run(args: argparse.Namespace) -> int:
    config = _apply_flags(config_from_args(args), args)
    api_key = config.require_api_key()
    config.require_data_types()
    try:  # before touching Kafka: a config that cannot subscribe to anything is an error
        subscription_channels(config.massive.data_types, config.massive.symbols)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: massive: {exc}") from None
    setup_cli_logging(args, secrets=[api_key, *config.secrets()])
    codec = make_codec(config)
    try:
        codec.register_all()
    except RegistryError as exc:
        log.error("%s", exc)
        print(f"massive-fetcher producer: error: {exc}; nothing was produced", file=sys.stderr)
        return EXIT_REGISTRY_FAILED
    registry = new_registry()
    try:
        publisher = Publisher(config, client_id="producer", registry=registry, codec=codec)
        publisher.wait_until_reachable(config.producer.kafka_wait_s)
        _ensure_topics(config)
    except PublisherError as exc:
        log.error("%s", exc)
        print(f"massive-fetcher producer: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    session = ProducerSession(config, publisher, registry=registry, codec=codec)
    # In-process backfill and gap repair produce through a Kafka producer of their own:
    # waiting for *their* records (flush before a checkpoint or a "repaired" marker) must
    # not mean waiting for the live stream's queue to drain, which under steady live load
    # it never does.
    side_publisher = (Publisher(config, client_id="producer-backfill", codec=codec,
                                defaults=HISTORY_PRODUCER_DEFAULTS)
                      if _wants_inprocess(config) else None)
    metrics = None
    if config.metrics.enabled:
        try:
            metrics = MetricsServer(registry, config.metrics.host,
                                    config.metrics.producer_port,
                                    health=session.health).start()
        except OSError as exc:
            print(f"massive-fetcher producer: error: cannot serve metrics on "
                  f"{config.metrics.host}:{config.metrics.producer_port}: {exc.strerror} "
                  "(set metrics.producer_port or --metrics-port)", file=sys.stderr)
            publisher.close(5)
            if side_publisher is not None:
                side_publisher.close(5)
            return EXIT_STARTUP_FAILED
        log.info("metrics at http://%s:%d/metrics", config.metrics.host, metrics.port,
                 extra={"metrics_port": metrics.port})
    try:
        code = asyncio.run(_main(session, config, side_publisher or publisher))
    finally:
        # the session's own final flush already waited for Kafka, when it got that far
        remaining = publisher.close(FLUSH_TIMEOUT_S if session.unacknowledged_at_stop is None
                                    else 1.0)
        if side_publisher is not None and side_publisher.close(FLUSH_TIMEOUT_S):
            # nothing is lost: what was not acknowledged was never checkpointed or marked
            # repaired, so the next run fetches it again
            log.warning("some backfill / gap-repair records were not acknowledged by Kafka; "
                        "their windows and gaps stay pending for the next run")
        if metrics is not None:
            metrics.stop()
    if code == 0 and remaining:
        code = EXIT_KAFKA_FAILED
    if code != 0:
        print(f"massive-fetcher producer: error: {session.exit_reason or 'failed'}"
              + (f" ({remaining} records not acknowledged by Kafka)" if remaining else ""),
              file=sys.stderr)
    log.info("producer exiting", extra={
        "exit_code": code, "reason": session.exit_reason,
        "events": dict(session.events_by_kind), "delivered": publisher.delivered,
        "failed": publisher.failed, "malformed": session.stats.malformed_total,
        "gaps": len(session.gaps), "reconnects": session.reconnects})
    return code


def _ensure_topics(config: Config) -> None:
    from schemas.topics import ensure_topics

    try:
        ensure_topics(config)
    except Exception as exc:  # TopicsError or a Kafka error: fatal at start either way
        raise PublisherError(f"cannot create or check the Kafka topics: {exc}") from exc


async def _main(session: ProducerSession, config: Config, side_publisher: Publisher) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, session.request_stop)
    _attach_inprocess(session, config, side_publisher)
    return await session.run()


def _wants_inprocess(config: Config) -> bool:
    """The config asks for the in-process backfill or for gap repair."""
    return bool(config.massive.query_start) or config.producer.gap_repair


def _attach_inprocess(session: ProducerSession, config: Config, publisher: Publisher) -> None:
    """Start the in-process backfill and register gap repair, if ``backfill`` has them;
    both produce through ``publisher`` (the producer's side publisher, see main)."""
    if not _wants_inprocess(config):
        return
    inprocess: Any
    try:
        from backfill import inprocess  # type: ignore[no-redef]
    except ImportError as exc:
        level = logging.WARNING if config.massive.query_start else logging.INFO
        log.log(level, "in-process backfill and gap repair are not available (%s); the "
                "live stream runs alone, gaps are still recorded in %s", exc,
                config.producer.gaps_file)
        return
    if config.massive.query_start:
        session.start_task(
            inprocess.run_inprocess_backfill(config, publisher, session.stop_event),
            name="inprocess-backfill")
    if config.producer.gap_repair:
        async def repair(gap: Gap) -> int | RepairOutcome:
            return await inprocess.repair_gap(config, publisher, gap)

        # also picks up the gaps earlier runs left unrepaired (marked in the gaps file)
        session.set_gap_repair(repair)
