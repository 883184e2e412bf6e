"""``massive-fetcher tail SYMBOL``: the latest bars, trades and quotes stored in MarketStore,
as a table, CSV or JSON lines; ``--follow`` keeps printing rows as they are written."""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from common.config import DATA_TYPES
from consumer.tornread import ATTEMPTS, is_torn, read_whole
from massive_fetcher.cli import (
    EXIT_FAILED,
    INSTANT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UsageError,
    add_config_argument,
    argtype,
    config_from_args,
)

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("table", "csv", "json")
# rows read per poll while following: a burst above it is read over several polls
FOLLOW_BATCH = 10000


@dataclass(frozen=True)
class Bucket:
    data_type: str
    timeframe: str
    group: str

    def key(self, symbol: str) -> str:
        return f"{symbol}/{self.timeframe}/{self.group}"


def buckets(types: tuple[str, ...], bar_timeframe: str) -> list[Bucket]:
    """The buckets of ``types`` in the layout the consumer writes."""
    layout = {"bars": Bucket("bars", bar_timeframe, "OHLCV"),
              "trades": Bucket("trades", "1Sec", "TRADE"),
              "quotes": Bucket("quotes", "1Min", "QUOTE")}
    return [layout[t] for t in types]


def marketstore_symbol(symbol: str) -> str:
    # MarketStore keys cannot hold '/', so the consumer stores BRK/A as BRK.A (legacy rule).
    return symbol.upper().replace("/", ".")


def parse_types(text: str) -> tuple[str, ...]:
    types = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in types if t not in DATA_TYPES]
    if bad or not types:
        raise ValueError(f"{','.join(bad) or text!r} is not a list of "
                         f"{', '.join(DATA_TYPES)}")
    return types


def parse_timeframe(text: str) -> str:
    # MarketStore itself decides which timeframes exist; only what cannot be part of a
    # bucket key is refused here.
    value = text.strip()
    if not value or not value.isalnum():
        raise ValueError(f"{text!r} is not a timeframe (e.g. 1Min, 5Min, 1H, 1D)")
    return value


def row_key(row: Any, names: tuple[str, ...]) -> tuple[int, int]:
    """A row's position in its bucket: (Epoch, Nanoseconds) where there are nanoseconds."""
    return int(row["Epoch"]), int(row["Nanoseconds"]) if "Nanoseconds" in names else 0


def iso_time(row: Any, names: tuple[str, ...]) -> str:
    epoch, nanos = row_key(row, names)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{stamp}.{nanos:09d}Z" if "Nanoseconds" in names else f"{stamp}Z"


def plain(value: Any) -> Any:
    """A numpy scalar as a JSON/CSV value: NaN (an absent float) becomes None."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(bucket: str, array: np.ndarray) -> Iterator[dict[str, Any]]:
    from consumer.buckets import column_names

    names = column_names(array.dtype)
    for row in array:
        yield {"bucket": bucket, "time": iso_time(row, names),
               **{name: plain(row[name]) for name in names}}


class Printer:
    """Writes rows in one of ``FORMATS``; CSV repeats its header when the bucket changes."""

    def __init__(self, fmt: str, out: TextIO) -> None:
        self.fmt = fmt
        self.out = out
        self._csv_bucket: str | None = None

    def empty(self, bucket: str) -> None:
        if self.fmt == "table":
            self.out.write(f"{bucket}: no rows\n")
            self.out.flush()

    def rows(self, title: str, bucket: str, array: np.ndarray) -> None:
        if self.fmt == "json":
            import orjson

            for record in records(bucket, array):
                self.out.write(orjson.dumps(record).decode() + "\n")
        elif self.fmt == "csv":
            self._csv(bucket, array)
        else:
            from rich.console import Console

            Console(file=self.out).print(rows_table(title, array))
        self.out.flush()

    def _csv(self, bucket: str, array: np.ndarray) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if bucket != self._csv_bucket:
            if self._csv_bucket is not None:
                buffer.write("\n")
            writer.writerow(["bucket", "time", *columns_of(array)])
            self._csv_bucket = bucket
        for record in records(bucket, array):
            writer.writerow(["" if v is None else v for v in record.values()])
        self.out.write(buffer.getvalue())


def columns_of(array: np.ndarray) -> tuple[str, ...]:
    from consumer.buckets import column_names

    return column_names(array.dtype)


def rows_table(title: str, array: np.ndarray) -> Any:
    import numpy as np
    from rich.table import Table

    from consumer.buckets import column_names

    table = Table(title=title)
    columns = column_names(array.dtype)
    for name in columns:
        table.add_column(name, justify="right")
    for row in array:
        cells = []
        for name in columns:
            value = row[name]
            if name == "Epoch":
                cells.append(str(np.datetime64(int(value), "s")))
            elif isinstance(value, np.floating):
                cells.append(f"{value:.4f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


class Reader:
    """Reads rows of one bucket at a time; a server that does not answer is ``Unreachable``."""

    def __init__(self, url: str) -> None:
        import pymarketstore as pymkts

        self.url = url
        self._pymkts = pymkts
        self._client = pymkts.Client(url)

    def query(self, bucket: str, *, start: int | None = None, end: int | None = None,
              limit: int, from_start: bool) -> np.ndarray | None:
        import requests

        symbol, timeframe, group = bucket.split("/")
        params = self._pymkts.Params(symbol, timeframe, group, start=start, end=end,
                                     limit=limit, limit_from_start=from_start)
        try:
            reply = read_whole(lambda: self._client.query(params))
        except Exception as exc:
            if is_torn(exc):
                raise StillTorn(bucket, exc) from None
            if isinstance(exc, requests.RequestException):
                raise Unreachable(self.url, exc) from None
            if "no files returned" in str(exc) or "does not exist" in str(exc):
                return None  # how the server answers for a bucket never written
            raise
        datasets = reply.all()
        return next(iter(datasets.values())).array if datasets else None


class Unreachable(Exception):
    def __init__(self, url: str, exc: Exception) -> None:
        super().__init__(f"no MarketStore answers at {url} ({type(exc).__name__}); start it "
                         "(`massive-fetcher services up`) or fix marketstore.url / "
                         "MARKETSTORE_URL")


class StillTorn(Exception):
    def __init__(self, bucket: str, exc: Exception) -> None:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        super().__init__(f"MarketStore answered {ATTEMPTS} reads of {bucket} with a torn "
                         f"block ({detail}): it is being appended to faster than it can be "
                         "read; try again")


def _seconds(args: argparse.Namespace, name: str) -> int | None:
    value = getattr(args, name)
    return None if value is None else int(value.timestamp())


def show_latest(reader: Reader, printer: Printer, symbol: str, chosen: list[Bucket],
                args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """Print the latest rows of each bucket; returns each bucket's last row key."""
    last: dict[str, tuple[int, int]] = {}
    for bucket in chosen:
        key = bucket.key(symbol)
        array = reader.query(key, start=_seconds(args, "since"), end=_seconds(args, "until"),
                             limit=args.limit, from_start=False)
        if array is None or len(array) == 0:
            printer.empty(key)
            continue
        printer.rows(f"{bucket.data_type}: {key} (latest {len(array)})", key, array)
        last[key] = row_key(array[-1], columns_of(array))
    return last


def follow(reader: Reader, printer: Printer, symbol: str, chosen: list[Bucket],
           last: dict[str, tuple[int, int]], interval_s: float, since: int | None,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Print every row written after ``last`` (per bucket), polling until interrupted."""
    while True:
        sleep(interval_s)
        for bucket in chosen:
            key = bucket.key(symbol)
            seen = last.get(key)
            start = seen[0] if seen is not None else since
            array = reader.query(key, start=start, limit=FOLLOW_BATCH, from_start=True)
            if array is None or len(array) == 0:
                continue
            names = columns_of(array)
            fresh = array if seen is None else array[
                [row_key(row, names) > seen for row in array]]
            if len(fresh):
                printer.rows(key, key, fresh)
                last[key] = row_key(fresh[-1], names)


def run(args: argparse.Namespace) -> int:
    if args.follow and args.until is not None:
        raise UsageError("--follow and --until exclude each other")
    if args.since is not None and args.until is not None and args.until < args.since:
        raise UsageError("--until is before --since")
    config = config_from_args(args)
    symbol = marketstore_symbol(args.symbol)
    chosen = buckets(args.types, args.timeframe)
    printer = Printer(args.format, sys.stdout)
    try:
        reader = Reader(config.marketstore.url)
        last = show_latest(reader, printer, symbol, chosen, args)
        if args.follow:
            follow(reader, printer, symbol, chosen, last, args.interval,
                   _seconds(args, "since"))
    except (Unreachable, StillTorn) as exc:
        print(f"massive-fetcher tail: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0 if last else EXIT_FAILED


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "tail",
        description="Print the latest rows of SYMBOL/<timeframe>/OHLCV, SYMBOL/1Sec/TRADE "
                    "and SYMBOL/1Min/QUOTE; with --follow, keep printing new rows until "
                    "Ctrl-C. Exit code 1 when none holds a row or MarketStore does not "
                    "answer.")
    parser.add_argument("symbol", help="ticker, e.g. AAPL")
    parser.add_argument("--limit", "-n", type=POSITIVE_INT, default=10, metavar="N",
                        help="rows per bucket, the latest (10)")
    parser.add_argument("--timeframe", "-t", type=argtype(parse_timeframe, "timeframe"),
                        default="1Min",
                        help="the bars bucket to read: 1Min (default), 5Min, 1H, 1D ...")
    parser.add_argument("--types", type=argtype(parse_types, "types"), default=DATA_TYPES,
                        metavar="LIST", help="comma-separated: bars,trades,quotes (default: "
                                             "all three)")
    parser.add_argument("--format", "-o", choices=FORMATS, default="table",
                        help="table (default), csv (a header per bucket; one type with "
                             "--types gives one plain CSV), json (one object per row)")
    parser.add_argument("--since", type=INSTANT, metavar="ISO",
                        help="only rows at or after this time (2026-11-24, "
                             "2026-11-24T14:30Z; naive = UTC)")
    parser.add_argument("--until", type=INSTANT, metavar="ISO",
                        help="only rows at or before this time")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing rows as they are written, until Ctrl-C")
    parser.add_argument("--interval", type=POSITIVE_FLOAT, default=1.0, metavar="SECONDS",
                        help="how often --follow polls MarketStore (1)")
    add_config_argument(parser)
    parser.set_defaults(func=run)
