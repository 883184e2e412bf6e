"""``massive-fetcher tail SYMBOL``: the latest bars, trades and quotes stored in MarketStore."""

from __future__ import annotations

import argparse

import numpy as np
import pymarketstore as pymkts
from rich.console import Console
from rich.table import Table

from consumer.buckets import column_names
from massive_fetcher.cli import add_config_argument, config_from_args

# (title, timeframe, attribute group) in the layout the consumer writes.
BUCKETS: tuple[tuple[str, str, str], ...] = (
    ("bars", "1Min", "OHLCV"),
    ("trades", "1Sec", "TRADE"),
    ("quotes", "1Min", "QUOTE"),
)


def marketstore_symbol(symbol: str) -> str:
    # MarketStore keys cannot hold '/', so the consumer stores BRK/A as BRK.A (legacy rule).
    return symbol.upper().replace("/", ".")


def latest_rows(client: pymkts.Client, symbol: str, timeframe: str, group: str,
                limit: int) -> np.ndarray | None:
    params = pymkts.Params(marketstore_symbol(symbol), timeframe, group,
                           limit=limit, limit_from_start=False)
    try:
        reply = client.query(params)
    except Exception as exc:  # the server answers "no files returned" for a missing bucket
        if "no files returned" in str(exc) or "does not exist" in str(exc):
            return None
        raise
    datasets = reply.all()
    return next(iter(datasets.values())).array if datasets else None


def rows_table(title: str, array: np.ndarray) -> Table:
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


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    client = pymkts.Client(config.marketstore.url)
    console = Console()
    found = False
    for title, timeframe, group in BUCKETS:
        array = latest_rows(client, args.symbol, timeframe, group, args.limit)
        bucket = f"{marketstore_symbol(args.symbol)}/{timeframe}/{group}"
        if array is None or len(array) == 0:
            console.print(f"{bucket}: no rows")
            continue
        found = True
        console.print(rows_table(f"{title}: {bucket} (latest {len(array)})", array))
    return 0 if found else 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tail", help="print the latest bars, trades and quotes of a symbol from MarketStore",
        description="Print the latest rows of SYMBOL/1Min/OHLCV, SYMBOL/1Sec/TRADE and "
                    "SYMBOL/1Min/QUOTE. Exit code 1 when none holds a row.")
    parser.add_argument("symbol", help="ticker, e.g. AAPL")
    parser.add_argument("--limit", "-n", type=int, default=10, help="rows per bucket (10)")
    add_config_argument(parser)
    parser.set_defaults(func=run)
