"""Backfill and gap repair inside the producer process, next to the live stream.

Both run on the producer's event loop with their own aiohttp session; mapping, encoding
and producing happen on worker threads in chunks (see backfill.engine), so the WebSocket
reader is never starved. Records go onto the same topics with ``source="backfill"``
through the Publisher the caller passes: the producer gives them one of their own, so a
flush here waits for backfill records only, never for the live stream's queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from backfill.checkpoint import Checkpoint, checkpoint_key, default_state_dir
from backfill.client import MassiveRestClient, RestError
from backfill.engine import BackfillEngine, FatalBackfillError
from backfill.plan import Window, gap_windows, market_today, plan_windows
from backfill.symbols import is_glob, match_glob
from common.config import Config
from common.deadletter import DeadLetterProducer
from common.timeframes import is_timeframe
from producer.gaps import RepairOutcome

log = logging.getLogger("backfill.inprocess")

# In-process work is polite: it shares the loop, the CPU and the broker with the live stream.
INPROCESS_PARALLELISM = 2
# Keep its Kafka queue at most 30 % full, so it never floods the broker the live stream uses
# (and works the same when a caller hands it the live Publisher itself).
LIVE_ROOM = (0.3, 0.2)


def _encoder(config: Config) -> Any:
    from schemas.codec import make_codec

    return make_codec(config)


def _rest_client(config: Config) -> MassiveRestClient:
    m = config.massive
    return MassiveRestClient(m.api_key or "", m.base_url, concurrency=INPROCESS_PARALLELISM,
                             rate_per_s=m.backfill_requests_per_second)


def _engine(config: Config, client: MassiveRestClient, publisher: Any,
            checkpoint: Checkpoint | None, **options: Any) -> BackfillEngine:
    """The polite engine shared by the in-process backfill and gap repair.

    A REST result that cannot become a record goes to the dead-letter topic, as in the
    CLI backfill: failing its window instead would leave a gap pending and fetched again
    for ever, for a record that will never be any better.
    """
    m = config.massive
    return BackfillEngine(client, publisher, _encoder(config), checkpoint,
                          parallelism=INPROCESS_PARALLELISM, limit=m.backfill_batch_size,
                          adjusted=m.backfill_adjusted, chunk=1000, room=LIVE_ROOM,
                          dead_letters=DeadLetterProducer(config, "producer-backfill-dlq"),
                          **options)


def inprocess_windows(config: Config) -> list[Window]:
    """Windows from the ``massive.query_start`` dates to today for the explicit symbols:
    bars in each of ``massive.bar_frequencies`` that has a start date, trades and quotes
    when configured."""
    m = config.massive
    today = market_today()
    windows: list[Window] = []
    for symbol in m.symbols:
        for key, start in m.query_start.items():
            if is_timeframe(key):
                if "bars" in m.data_types and key in m.bar_frequencies:
                    windows += plan_windows(symbol, "bars", start, today, key,
                                            m.backfill_batch_size)
            elif key in m.data_types:
                windows += plan_windows(symbol, key, start, today,
                                        limit=m.backfill_batch_size)
    return windows


def ignored_starts(config: Config) -> list[str]:
    """Why each ``massive.query_start`` key the in-process backfill passes over is."""
    m = config.massive
    reasons = []
    for key in m.query_start:
        if not is_timeframe(key):
            if key not in m.data_types:
                reasons.append(f"massive.query_start.{key} ignored: {key} is not in "
                               "massive.data_types")
        elif "bars" not in m.data_types:
            reasons.append(f"massive.query_start.{key} ignored: bars is not in "
                           "massive.data_types")
        elif key not in m.bar_frequencies:
            reasons.append(f"massive.query_start.{key} ignored: {key} is not in "
                           f"massive.bar_frequencies ({', '.join(m.bar_frequencies)})")
    for frequency in m.bar_frequencies:
        if "bars" in m.data_types and frequency not in m.query_start:
            reasons.append(f"massive.bar_frequencies {frequency} not backfilled: no "
                           f"massive.query_start.{frequency} date")
    return reasons


async def run_inprocess_backfill(config: Config, publisher: Any, stop: asyncio.Event) -> None:
    """Backfill ``massive.query_start`` .. now for ``massive.symbols``; resumable.

    Meant to run as its own task while the live stream runs. Returns when done, when
    ``stop`` is set, or at once (with a log line) when there is nothing it can do.
    Windows already in the checkpoint are skipped; today's window is fetched up to now and
    never checkpointed (the live stream continues from there).
    """
    m = config.massive
    if not m.query_start:
        return
    globs = [s for s in m.symbols if is_glob(s)]
    if globs:
        log.error("in-process backfill does not support wildcard symbols (%s); use the "
                  "CLI: massive-fetcher backfill -symbols '%s' ...",
                  ",".join(globs), ",".join(globs))
        return
    if not m.api_key:
        log.error("in-process backfill needs massive.api_key")
        return
    for reason in ignored_starts(config):
        log.warning("%s", reason)
    windows = inprocess_windows(config)
    if not windows:
        return
    state_dir = default_state_dir(config) / "backfill"
    checkpoint = Checkpoint(state_dir, checkpoint_key(config, m.backfill_adjusted))
    log.info("in-process backfill starting",
             extra={"windows": len(windows), "symbols": len(m.symbols),
                    "already_done": sum(1 for w in windows if w.id in checkpoint)})
    try:
        async with _rest_client(config) as client:
            engine = _engine(config, client, publisher, checkpoint, stop=stop)
            progress = await engine.run(windows)
        log.info("in-process backfill finished", extra=progress.as_dict())
        for failure in progress.failures:
            log.error("in-process backfill window failed: %s", failure)
    except FatalBackfillError as exc:
        log.error("in-process backfill stopped: %s", exc)
    finally:
        checkpoint.close()


def _gap_field(gap: Any, name: str, default: Any = None) -> Any:
    if isinstance(gap, Mapping):
        return gap.get(name, default)
    return getattr(gap, name, default)


def repair_targets(symbols: list[str], data_types: list[str],
                   seen: Mapping[str, Any]) -> tuple[dict[str, list[str]], str]:
    """Pure: per data type, the symbols a repair can fetch, and why the rest of the gap
    cannot be repaired ("" when nothing is left out).

    Explicit symbols are always fetched. A wildcard (``*``, ``A*``) names no symbol: only
    those ``seen`` streaming before the gap (per data type) can be fetched; a symbol that
    traded in the window but never streamed in that session cannot be known.
    """
    explicit = [s for s in symbols if not is_glob(s)]
    globs = [s for s in symbols if is_glob(s)]
    targets: dict[str, list[str]] = {}
    for data_type in data_types:
        extra = [s for s in seen.get(data_type, ()) if any(match_glob(g, s) for g in globs)]
        targets[data_type] = sorted(set(explicit).union(extra)) if extra else explicit
    if not globs:
        return targets, ""
    counts = ", ".join(f"{t} {len(targets[t]) - len(explicit)}" for t in data_types)
    return targets, (
        f"wildcard subscription {','.join(globs)}: repaired only for the symbols seen "
        f"streaming before the gap ({counts}); a symbol that never streamed in that session "
        f"cannot be named, so the window is not repaired for it (backfill it with "
        f"massive-fetcher backfill -symbols '{','.join(globs)}')")


async def repair_gap(config: Config, publisher: Any, gap: Any) -> RepairOutcome:
    """Fetch [gap.start_ns, gap.end_ns] from REST and publish it.

    ``gap`` is a mapping or an object with ``start_ns`` and ``end_ns`` (Unix ns, both
    included) and optionally ``symbols``, ``data_types`` (default: the configured ones)
    and ``seen`` (per data type, the symbols that streamed before a wildcard gap). Trades
    and quotes are fetched over exactly that interval, bars as the 1Min bars overlapping
    it that are complete by now (the live stream delivers the current one). What a
    wildcard leaves out is returned as ``unrepairable`` (see :func:`repair_targets`).
    Raises :class:`RestError` / :class:`FatalBackfillError` when the repair is incomplete
    (a window failed, or Kafka did not acknowledge every record), so the producer leaves
    the gap pending and tries again; returns only after Kafka acknowledged every record.
    """
    m = config.massive
    start_ns = int(_gap_field(gap, "start_ns"))
    end_ns = int(_gap_field(gap, "end_ns"))
    symbols = list(_gap_field(gap, "symbols") or m.symbols)
    data_types = list(_gap_field(gap, "data_types") or m.data_types)
    targets, unrepairable = repair_targets(symbols, data_types, _gap_field(gap, "seen") or {})
    if unrepairable:
        log.warning("gap repair: %s", unrepairable,
                    extra={"start_ns": start_ns, "end_ns": end_ns})
    now = time.time_ns()
    windows = [w for data_type, syms in targets.items() for s in syms
               for w in gap_windows(s, [data_type], start_ns, end_ns, now)]
    if not windows:
        return RepairOutcome(0, unrepairable, targets if unrepairable else {})
    if not m.api_key:
        raise FatalBackfillError("gap repair needs massive.api_key")
    failed_before = publisher.failed
    async with _rest_client(config) as client:
        engine = _engine(config, client, publisher, None, commit_interval_s=3600.0)
        progress = await engine.run(windows)
    if progress.windows_failed or progress.failures:
        raise RestError(f"gap repair incomplete: {progress.windows_failed} of "
                        f"{len(windows)} window(s) failed: {progress.failures[0]}")
    remaining = await asyncio.to_thread(publisher.flush, 30.0)
    if remaining or publisher.failed != failed_before:
        raise FatalBackfillError(
            f"gap repair: {remaining or publisher.failed - failed_before} record(s) not "
            "acknowledged by Kafka")
    log.info("gap repaired", extra={"start_ns": start_ns, "end_ns": end_ns,
                                    "windows": len(windows), "records": progress.records,
                                    "pages": progress.pages,
                                    "dead_letters": progress.dead_letters})
    return RepairOutcome(progress.records, unrepairable, targets if unrepairable else {},
                         dead_letters=progress.dead_letters)
