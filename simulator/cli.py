"""``massive-fetcher simulator``: a Massive-compatible WS + REST server driven by the model."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from common.config import ConfigError
from massive_fetcher.cli import add_config_argument, config_from_args, setup_cli_logging

if TYPE_CHECKING:
    from simulator.server import Simulator

log = logging.getLogger("simulator")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulator",
        description="Serve WS /stocks and the REST routes on one port from a deterministic "
                    "market model (control endpoints under /_sim/, /healthz and /metrics "
                    "on the same port). Defaults come from the config's simulator section.")
    add_config_argument(p)
    p.add_argument("--host", help="listen address")
    p.add_argument("--port", type=int, help="listen port (0: any free port)")
    p.add_argument("--seed", type=int, help="market model seed")
    p.add_argument("--symbols", nargs="+", metavar="SYM",
                   help="the universe (default: built-in common tickers)")
    p.add_argument("--trades-per-second", type=float, metavar="X", help="per symbol")
    p.add_argument("--quotes-per-second", type=float, metavar="X", help="per symbol")
    p.add_argument("--api-key", dest="api_keys", action="extend", nargs="+", metavar="KEY",
                   help="accepted keys (default: any non-empty key)")
    p.add_argument("--unentitled-key", dest="unentitled_api_keys", action="extend",
                   nargs="+", metavar="KEY", help="keys that authenticate but get 403 on REST")
    p.add_argument("--max-connections", type=int, help="WebSocket connections per key")
    p.add_argument("--rest-rps", dest="rest_requests_per_second", type=float, metavar="X",
                   help="REST requests per second per key before 429 (0: no limit)")
    p.add_argument("--slow-consumer-bytes", type=int, metavar="N",
                   help="queued bytes before a WS client is dropped as slow_consumer")
    p.add_argument("--tick-ms", type=int, help="live frame interval")
    p.add_argument("--max-frame-events", type=int, help="events per frame at most")
    p.add_argument("--zipf", type=float, metavar="S",
                   help="activity rank ** -S per symbol, in --symbols order (0: all alike)")
    p.add_argument("--day-shape", action="store_true", default=None,
                   help="trade only in the US session (14:30-21:00 UTC), with open and "
                        "close bursts")
    p.add_argument("--no-live", dest="live", action="store_false",
                   help="no real-time stream; data only through POST /_sim/burst")
    p.add_argument("--delayed", action="store_true",
                   help='REST answers carry status "DELAYED" instead of "OK"')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulator.server import Simulator, settings_from  # numpy, aiohttp: not for --help

    config = config_from_args(args)
    fields = ("host", "port", "seed", "symbols", "trades_per_second", "quotes_per_second",
              "api_keys", "unentitled_api_keys", "max_connections",
              "rest_requests_per_second", "slow_consumer_bytes", "tick_ms",
              "max_frame_events", "zipf", "day_shape")
    if args.symbols:  # "AAPL,MSFT" works as well as "AAPL MSFT"
        args.symbols = [s for arg in args.symbols for s in arg.split(",") if s]
    settings = settings_from(config, **{f: getattr(args, f) for f in fields})
    keys = [*settings.api_keys, *settings.unentitled_api_keys]
    setup_cli_logging(args, secrets=keys)
    try:
        sim = Simulator(settings, live=args.live, status="DELAYED" if args.delayed else "OK")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    asyncio.run(_serve(sim))
    return 0


async def _serve(sim: Simulator) -> None:
    from aiohttp import web

    runner = web.AppRunner(sim.app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, sim.settings.host, sim.settings.port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[attr-defined]
    port = sockets[0].getsockname()[1] if sockets else sim.settings.port
    log.info("simulator listening", extra={
        "url": f"http://{sim.settings.host}:{port}", "ws": f"ws://{sim.settings.host}:{port}/stocks",
        "symbols": len(sim.model.symbols), "seed": sim.settings.seed,
        "trades_per_second": sim.settings.trades_per_second,
        "quotes_per_second": sim.settings.quotes_per_second})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("simulator stopping")
    await runner.cleanup()
