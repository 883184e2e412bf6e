"""Parse and validate the backfill flags (the seed's spelling plus kebab-case) into Options.

Pure: no I/O. Every problem becomes one :class:`OptionsError` line (exit code 2).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Protocol

from backfill.plan import MAX_LIMIT
from backfill.symbols import split_symbols
from common.config import Config, query_start_key
from common.timeframes import TimeframeError, canonical, is_timeframe, parse_timeframe


class OptionsError(ValueError):
    """A flag value the user must fix."""


class Flags(Protocol):
    """The parsed backfill flags (``backfill.cli``'s argparse namespace); None: not given."""

    @property
    def bars(self) -> str | None: ...
    @property
    def trades(self) -> str | None: ...
    @property
    def quotes(self) -> str | None: ...
    @property
    def bar_frequencies(self) -> str | None: ...
    @property
    def starts(self) -> list[str] | None: ...
    @property
    def to(self) -> str | None: ...
    @property
    def symbols(self) -> str | None: ...
    @property
    def parallelism(self) -> int | None: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def adjusted(self) -> str | None: ...
    @property
    def rate(self) -> float | None: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def max_retries(self) -> int | None: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def restart(self) -> bool: ...
    @property
    def dir(self) -> str | None: ...


@dataclass(frozen=True)
class Options:
    data_types: list[str]  # bars / trades / quotes, in this order
    bar_frequencies: list[str]
    starts: dict[str, dt.date]  # bar timeframe (15Min ...) / trades / quotes -> first day
    end: dt.date
    symbols: list[str]  # explicit tickers and globs
    parallelism: int
    batch_size: int
    adjusted: bool
    rate_per_s: float = 0.0
    timeout_s: float = 30.0
    max_retries: int = 10
    state_dir: str | None = None
    resume: bool = True
    warnings: list[str] = field(default_factory=list)

    def start_of(self, data_type: str, frequency: str = "") -> dt.date:
        return self.starts[frequency if data_type == "bars" else data_type]


def parse_bool(value: str | bool | None, flag: str) -> bool:
    if value is None or isinstance(value, bool):
        return True if value is None else value
    lowered = value.strip().lower()
    if lowered in ("true", "t", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "f", "0", "no", "n", "off"):
        return False
    raise OptionsError(f"{flag} expects true or false, got {value!r}")


def parse_date(value: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise OptionsError(f"{flag}: {value!r} is not a date YYYY-MM-DD") from None


def parse_frequencies(value: str) -> list[str]:
    found: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            item = canonical(item)
        except TimeframeError as exc:
            raise OptionsError(f"-barFrequencies: {exc}") from None
        if item not in found:
            found.append(item)
    if not found:
        raise OptionsError("-barFrequencies is empty")
    return found


def parse_starts(values: list[str]) -> dict[str, dt.date]:
    starts: dict[str, dt.date] = {}
    for value in values:
        if "=" not in value:
            raise OptionsError(f"-from {value!r}: expected TYPE=YYYY-MM-DD, e.g. "
                               "-from 1Min=2024-01-01 (TYPE is a bar frequency, trades or "
                               "quotes)")
        key, _, day = value.partition("=")
        try:
            key = query_start_key(key.strip())
        except ValueError as exc:
            raise OptionsError(f"-from {value!r}: {exc}") from None
        starts[key] = parse_date(day, f"-from {key}")
    return starts


def build_options(ns: Flags, config: Config, today: dt.date) -> Options:
    """Validate the parsed argparse namespace ``ns`` against ``config``'s defaults."""
    warnings: list[str] = []
    if getattr(ns, "dir", None) is not None:
        warnings.append(f"-dir {ns.dir} ignored: MarketStore's data directory is "
                        "MarketStore's own; backfill publishes to Kafka and the consumer "
                        "writes through MarketStore's API (marketstore.url)")
    data_types = [t for t, flag in (("bars", ns.bars), ("trades", ns.trades),
                                    ("quotes", ns.quotes))
                  if flag is not None and parse_bool(flag, f"-{t}")]
    if not data_types:
        raise OptionsError("no data type chosen: give at least one of -bars, -trades, -quotes")
    starts = parse_starts(ns.starts or [])
    if ns.bar_frequencies is not None:
        frequencies = parse_frequencies(ns.bar_frequencies)
    else:
        # without -barFrequencies, the frequencies named in -from say what is wanted
        named = sorted((f for f in starts if is_timeframe(f)),
                       key=lambda f: parse_timeframe(f).seconds)
        frequencies = named or list(config.massive.bar_frequencies)
    needed = list(frequencies) if "bars" in data_types else []
    needed += [t for t in ("trades", "quotes") if t in data_types]
    for key in list(starts):
        if key not in needed:  # e.g. -from trades=... with -trades=false: normal in scripts
            del starts[key]
    for key in needed:
        if key not in starts:
            configured = config.massive.query_start.get(key)  # type: ignore[call-overload]
            if configured is None:
                raise OptionsError(f"no start date for {key}: give -from {key}=YYYY-MM-DD")
            starts[key] = configured
    end = parse_date(ns.to, "-to") if ns.to else today
    if end > today:
        warnings.append(f"-to {end.isoformat()} is in the future; backfilling up to today "
                        f"({today.isoformat()})")
        end = today
    for key, start in starts.items():
        if end < start:
            raise OptionsError(f"-to {end.isoformat()} is before -from "
                               f"{key}={start.isoformat()}")
    symbols = split_symbols(ns.symbols) if ns.symbols is not None else list(
        config.massive.symbols)
    if not symbols:
        raise OptionsError("-symbols is empty")
    parallelism = ns.parallelism if ns.parallelism is not None else (os.cpu_count() or 1)
    if parallelism < 1:
        raise OptionsError(f"-parallelism must be at least 1, got {parallelism}")
    batch_size = (ns.batch_size if ns.batch_size is not None
                  else config.massive.backfill_batch_size)
    if not 1 <= batch_size <= MAX_LIMIT:
        raise OptionsError(f"-batchSize must be between 1 and {MAX_LIMIT}, got {batch_size}")
    adjusted = (parse_bool(ns.adjusted, "-adjusted") if ns.adjusted is not None
                else config.massive.backfill_adjusted)
    if ns.rate is not None and ns.rate < 0:
        raise OptionsError(f"--rate must be >= 0, got {ns.rate}")
    if ns.timeout is not None and ns.timeout <= 0:
        raise OptionsError(f"--timeout must be > 0, got {ns.timeout}")
    return Options(data_types=data_types, bar_frequencies=frequencies, starts=starts, end=end,
                   symbols=symbols, parallelism=parallelism, batch_size=batch_size,
                   adjusted=adjusted,
                   rate_per_s=(ns.rate if ns.rate is not None
                               else config.massive.backfill_requests_per_second),
                   timeout_s=ns.timeout or 30.0,
                   max_retries=ns.max_retries if ns.max_retries is not None else 10,
                   state_dir=ns.state_dir, resume=not ns.restart, warnings=warnings)
