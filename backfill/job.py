"""One backfill run from validated options: resolve symbols, plan windows, run the engine."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backfill.checkpoint import Checkpoint, checkpoint_key, default_state_dir
from backfill.client import MassiveRestClient, RetryPolicy
from backfill.engine import BackfillEngine, DeadLetters, Progress
from backfill.options import Options
from backfill.plan import Window, plan_windows
from backfill.symbols import is_glob
from common.config import Config

log = logging.getLogger("backfill.job")


@dataclass
class JobResult:
    symbols: list[str]
    progress: Progress
    client_stats: Any


async def resolve_symbols(client: MassiveRestClient, specs: list[str]) -> list[str]:
    """Explicit tickers as given; each glob expanded through /v3/reference/tickers."""
    resolved: dict[str, None] = {}
    for spec in specs:
        if is_glob(spec):
            matches = await client.list_tickers(spec)
            log.info("symbols resolved", extra={"pattern": spec, "matches": len(matches)})
            for ticker in matches:
                resolved.setdefault(ticker, None)
        else:
            resolved.setdefault(spec, None)
    return list(resolved)


def plan_all(symbols: list[str], options: Options) -> list[Window]:
    """Every window, symbol by symbol, so symbols complete one after another."""
    windows: list[Window] = []
    for symbol in symbols:
        for data_type in options.data_types:
            if data_type == "bars":
                for freq in options.bar_frequencies:
                    windows += plan_windows(symbol, "bars", options.starts[freq], options.end,
                                            freq, options.batch_size)
            else:
                windows += plan_windows(symbol, data_type, options.starts[data_type],
                                        options.end, limit=options.batch_size)
    return windows


async def run_job(config: Config, options: Options, publisher: Any, encoder: Any,
                  stop: asyncio.Event,
                  on_engine: Callable[[BackfillEngine], object] | None = None,
                  dead_letters: DeadLetters | None = None) -> JobResult:
    """Run the backfill ``options`` describe. Bad REST results go to ``dead_letters``;
    without it they fail their windows (see ``backfill.engine``)."""
    api_key = config.require_api_key()
    state_dir = options.state_dir or str(default_state_dir(config) / "backfill")
    key = checkpoint_key(config, options.adjusted)
    if not options.resume:
        # a new key suffix: earlier lines stay in the file but no longer count
        key += "-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    checkpoint = Checkpoint(state_dir, key)
    try:
        async with MassiveRestClient(api_key, config.massive.base_url,
                                     concurrency=options.parallelism,
                                     rate_per_s=options.rate_per_s,
                                     timeout_s=options.timeout_s,
                                     retry=RetryPolicy(max_retries=options.max_retries)
                                     ) as client:
            symbols = await resolve_symbols(client, options.symbols)
            windows = plan_all(symbols, options)
            log.info("backfill planned", extra={
                "symbols": len(symbols), "windows": len(windows),
                "already_done": sum(1 for w in windows if w.id in checkpoint),
                "checkpoint": str(checkpoint.path)})
            engine = BackfillEngine(client, publisher, encoder, checkpoint,
                                    parallelism=options.parallelism,
                                    limit=options.batch_size, adjusted=options.adjusted,
                                    stop=stop, dead_letters=dead_letters)
            if on_engine is not None:
                on_engine(engine)
            progress = await engine.run(windows)
            return JobResult(symbols, progress, client.stats)
    finally:
        checkpoint.close()
