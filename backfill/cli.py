"""``massive-fetcher backfill``: Massive REST history -> the same Kafka topics as live data.

Accepts the seed backfiller's flags verbatim (``-apiKey``, ``-bars``, ``-from 1Min=...``,
``-adjusted=false`` ...) and kebab-case long options (``--api-key``, ``--from`` ...).
``-config`` takes the plugin's MarketStore ``mkts.yml`` as it is. ``-dir`` is accepted
but ignored with one warning line: MarketStore's data directory is MarketStore's own, the
consumer writes through its API. A REST result that cannot become a record goes
to the dead-letter topic with the reason and its window. Exit codes: 0 done, 1 some
windows failed, Kafka did not acknowledge everything or a result was dead-lettered, 2 bad
input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from typing import Any

from backfill.client import RestError
from backfill.engine import BackfillEngine, FatalBackfillError, Progress
from backfill.options import Options, OptionsError, build_options
from backfill.plan import market_today
from common.config import Config
from common.deadletter import DeadLetterProducer
from common.progressbar import TerminalBar

log = logging.getLogger("backfill.cli")

PROGRESS_LOG_INTERVAL_S = 5.0


def register(subparsers: Any) -> None:
    from massive_fetcher.cli import PORT, add_config_argument

    p = subparsers.add_parser(
        "backfill", allow_abbrev=False,
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(p)
    p.add_argument("-config", dest="config", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("-apiKey", "--apiKey", "--api-key", dest="api_key", metavar="KEY",
                   help="Massive API key (else massive.api_key / $MASSIVE_API_KEY)")
    p.add_argument("-baseURL", "--baseURL", "--base-url", dest="base_url", metavar="URL",
                   help="REST base URL (else massive.base_url)")
    for name in ("bars", "trades", "quotes"):
        p.add_argument(f"-{name}", f"--{name}", dest=name, nargs="?", const="true",
                       default=None, metavar="BOOL", help=f"backfill {name}")
    p.add_argument("-barFrequencies", "--barFrequencies", "--bar-frequencies",
                   dest="bar_frequencies", metavar="LIST",
                   help='bar frequencies, e.g. "1Min,15Min,1D" (timeframes MarketStore '
                        "returns: 1Sec 10Sec 30Sec 1Min 5Min 15Min 30Min 1H 2H 1D; default "
                        "massive.bar_frequencies)")
    p.add_argument("-from", "--from", dest="starts", action="append", metavar="TYPE=DATE",
                   help="first day per type, repeatable: -from 1Min=2024-01-01 "
                        "-from trades=2024-01-02 (default massive.query_start)")
    p.add_argument("-to", "--to", dest="to", metavar="DATE",
                   help="last day, included (default today, New York time)")
    p.add_argument("-symbols", "--symbols", dest="symbols", metavar="LIST|GLOB",
                   help="comma list (AAPL,MSFT) or glob (A*, * = every active stock); "
                        "default massive.symbols")
    p.add_argument("-parallelism", "--parallelism", dest="parallelism", type=int,
                   metavar="N", help="windows fetched at once (default: CPU count)")
    p.add_argument("-batchSize", "--batchSize", "--batch-size", dest="batch_size", type=int,
                   metavar="N", help="REST page size, max 50000 "
                                     "(default massive.backfill_batch_size)")
    p.add_argument("-adjusted", "--adjusted", dest="adjusted", nargs="?", const="true",
                   default=None, metavar="BOOL",
                   help="split-adjusted bars (default massive.backfill_adjusted, true)")
    p.add_argument("-dir", "--dir", dest="dir", metavar="DIR",
                   help="no longer applies (ignored with a warning): nothing is written "
                        "to disk directly")
    p.add_argument("--rate", "-rate", dest="rate", type=float, metavar="PER_S",
                   help="max REST requests per second (0 = unlimited; default "
                        "massive.backfill_requests_per_second)")
    p.add_argument("--timeout", dest="timeout", type=float, metavar="S",
                   help="timeout of one REST request (default 30)")
    p.add_argument("--max-retries", dest="max_retries", type=int, metavar="N",
                   help="retries per request on 429/5xx/timeouts (default 10)")
    p.add_argument("--state-dir", dest="state_dir", metavar="DIR",
                   help="where the resume checkpoint lives (default "
                        "<services.state_dir>/backfill)")
    p.add_argument("--metrics-port", dest="metrics_port", type=PORT, metavar="PORT",
                   help="serve /metrics here (default metrics.backfill_port; 0: not "
                        "served)")
    p.add_argument("--restart", dest="restart", action="store_true",
                   help="ignore the checkpoint and fetch everything again")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from massive_fetcher.cli import UsageError, config_from_args, setup_cli_logging

    config = config_from_args(args)
    massive = config.massive
    if args.api_key:
        massive = _replace(massive, api_key=args.api_key)
    if args.base_url:
        massive = _replace(massive, base_url=args.base_url)
    config = config.replace(massive=massive)
    if args.metrics_port is not None:
        config = config.replace(metrics=_replace(config.metrics, backfill_port=args.metrics_port))
    try:
        options = build_options(args, config, market_today())
    except OptionsError as exc:
        raise UsageError(str(exc)) from None
    api_key = config.require_api_key()
    setup_cli_logging(args, secrets=[api_key, *config.secrets()])
    for warning in options.warnings:  # one line each, on stderr where the logs go too
        print(f"massive-fetcher backfill: warning: {warning}", file=sys.stderr)
    try:
        return asyncio.run(_main(config, options))
    except RestError as exc:
        print(f"massive-fetcher backfill: error: {exc}", file=sys.stderr)
        return 1


def _replace(section: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(section, **changes)


async def _main(config: Config, options: Options) -> int:
    from backfill.job import run_job
    from common.metrics import new_registry
    from producer.publisher import HISTORY_PRODUCER_DEFAULTS, Publisher, PublisherError
    from schemas.codec import RegistryError, make_codec

    codec = make_codec(config)
    try:  # an unusable registry or a refused schema: before anything is produced
        await asyncio.to_thread(codec.register_all)
    except RegistryError as exc:
        print(f"massive-fetcher backfill: error: {exc}; nothing was produced", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []

    def on_signal(signum: int) -> None:
        interrupted.append(signum)
        if stop.is_set():  # second signal: give up at once
            raise KeyboardInterrupt
        log.warning("stopping: finishing in-flight pages and saving the checkpoint")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)

    registry = new_registry()
    try:
        publisher = Publisher(config, client_id="backfill", registry=registry, codec=codec,
                              defaults=HISTORY_PRODUCER_DEFAULTS)
        await asyncio.to_thread(publisher.wait_until_reachable, 15.0)
    except PublisherError as exc:
        print(f"massive-fetcher backfill: error: {exc}", file=sys.stderr)
        return 1
    dead_letters = DeadLetterProducer(config, client_id="backfill-dlq")
    await asyncio.to_thread(_ensure_topics, config)
    holder: dict[str, BackfillEngine] = {}
    registry.register(_ProgressCollector(holder))
    metrics = _start_metrics(config, registry)
    display = _Display(sys.stdout.isatty())
    display_task = asyncio.create_task(display.run(holder))
    status = 0
    try:
        result = await run_job(config, options, publisher, codec, stop,
                               on_engine=lambda e: holder.setdefault("engine", e),
                               dead_letters=dead_letters)
    except FatalBackfillError as exc:
        print(f"massive-fetcher backfill: error: {exc}", file=sys.stderr)
        status = 1
        result = None
    finally:
        display_task.cancel()
        await asyncio.gather(display_task, return_exceptions=True)
        display.close()
        remaining = await asyncio.to_thread(publisher.close, 60.0)
        remaining += await asyncio.to_thread(dead_letters.flush, 60.0)
        if metrics is not None:
            metrics.stop()
    if result is not None:
        _summary(result.symbols, result.progress, result.client_stats, remaining,
                 dead_letters.topic)
        p = result.progress
        if p.windows_failed or p.failures or p.dead_letters or remaining:
            status = 1
    if interrupted and status == 0:
        status = 130
    return status


def _ensure_topics(config: Config) -> None:
    try:
        from schemas.topics import ensure_topics
    except ImportError:  # pragma: no cover - the schemas part provides it
        return
    ensure_topics(config)


def _start_metrics(config: Config, registry: Any) -> Any:
    if not config.metrics.enabled or not config.metrics.backfill_port:
        return None
    from common.metrics import MetricsServer

    try:
        return MetricsServer(registry, config.metrics.host,
                             config.metrics.backfill_port).start()
    except OSError as exc:
        log.warning("metrics not served", extra={"port": config.metrics.backfill_port,
                                                  "error": str(exc)})
        return None


def _summary(symbols: list[str], p: Progress, stats: Any, unacked: int,
             dead_letter_topic: str) -> None:
    rate = p.records / p.elapsed_s if p.elapsed_s else 0.0
    lines = [
        "backfill summary:",
        f"  symbols   {p.symbols_done}/{p.symbols_total}",
        f"  windows   {p.windows_done} fetched, {p.windows_skipped} skipped (checkpoint), "
        f"{p.windows_failed} failed, {p.windows_checkpointed} checkpointed",
        f"  pages     {p.pages}  requests {stats.requests}  retries {stats.retries} "
        f"(429: {stats.throttled}, errors: {stats.server_errors})",
        f"  records   {p.records} published in {p.elapsed_s:.1f}s ({rate:,.0f}/s)"
        + (f", {p.partial_bars} bars still running left out" if p.partial_bars else ""),
    ]
    if p.dead_letters:
        lines.append(f"  DEAD LETTERS: {p.dead_letters} REST result(s) could not become "
                     f"records; sent to {dead_letter_topic} with the reason and the window")
    if unacked:
        lines.append(f"  KAFKA: {unacked} record(s) not acknowledged; rerun to redo them")
    for failure in p.failures[:20]:
        lines.append(f"  failed: {failure}")
    if len(p.failures) > 20:
        lines.append(f"  ... and {len(p.failures) - 20} more failures")
    print("\n".join(lines), flush=True)
    log.info("backfill finished", extra={**p.as_dict(), "requests": stats.requests,
                                         "retries": stats.retries, "unacknowledged": unacked})


class _ProgressCollector:
    """The engine's counters at scrape time (``massive_fetcher_backfill_*``)."""

    def __init__(self, holder: dict[str, BackfillEngine]) -> None:
        self._holder = holder

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from common.metrics import NAMESPACE

        prefix = f"{NAMESPACE}_backfill"
        engine = self._holder.get("engine")
        if engine is None:
            return
        p, stats = engine.progress, engine.client.stats
        yield GaugeMetricFamily(f"{prefix}_windows_planned", "Windows planned",
                                value=p.windows_total)
        done = CounterMetricFamily(f"{prefix}_windows", "Windows finished, by outcome",
                                   labels=["outcome"])
        for outcome, n in (("fetched", p.windows_done), ("skipped", p.windows_skipped),
                           ("failed", p.windows_failed),
                           ("checkpointed", p.windows_checkpointed)):
            done.add_metric([outcome], n)
        yield done
        yield CounterMetricFamily(f"{prefix}_pages", "REST pages received",
                                  value=p.pages)
        yield CounterMetricFamily(f"{prefix}_records", "Records published",
                                  value=p.records)
        yield CounterMetricFamily(f"{prefix}_dead_letters",
                                  "REST results sent to the dead-letter topic (they could "
                                  "not become records)", value=p.dead_letters)
        yield CounterMetricFamily(f"{prefix}_http_requests", "REST requests sent",
                                  value=stats.requests)
        yield CounterMetricFamily(f"{prefix}_http_retries", "REST requests retried",
                                  value=stats.retries)
        yield CounterMetricFamily(f"{prefix}_http_throttled", "REST 429 answers",
                                  value=stats.throttled)


class _Display:
    """A rich progress bar on a terminal, a log line every few seconds otherwise."""

    def __init__(self, tty: bool) -> None:
        self._bar = TerminalBar("backfill", "windows", detail=True) if tty else None

    async def run(self, holder: dict[str, BackfillEngine]) -> None:
        while "engine" not in holder:
            await asyncio.sleep(0.1)
        engine = holder["engine"]
        if self._bar is not None:
            self._bar.start()
        last_log = time.monotonic()
        while True:
            p = engine.progress
            if self._bar is not None:
                rate = p.records / p.elapsed_s if p.elapsed_s else 0.0
                self._bar.update(
                    p.windows_finished, p.windows_total,
                    detail=f"symbols {p.symbols_done}/{p.symbols_total}  pages {p.pages}  "
                           f"records {p.records:,}  {rate:,.0f}/s")
            elif time.monotonic() - last_log >= PROGRESS_LOG_INTERVAL_S:
                last_log = time.monotonic()
                log.info("backfill progress", extra=p.as_dict())
            await asyncio.sleep(0.25)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
