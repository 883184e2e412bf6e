"""The simulator's aiohttp application (WS ``/stocks``, REST, control, health, metrics on one
port) and :class:`SimulatorServer`, which runs it in a background thread for tests.

Control endpoints (no auth; bind to localhost):

* ``POST /_sim/force_disconnect``  body ``{"conn": id}`` optional (default: every client)
* ``POST /_sim/inject``            body ``{"status": 503, "count": 3, "path": "/v3/"}``:
  the next ``count`` REST requests (whose path starts with ``path``, if given) fail; with
  ``{"path": "/v3/quotes/AAPL", "alter": {"where": {"sequence_number": 7}, "omit":
  ["bid_price"], "set": {...}}, "count": 1}`` instead, the next ``count`` results under
  ``path`` that match ``where`` are served without the ``omit`` fields and with ``set``
* ``POST /_sim/burst``             body ``{"events": N, "conn": id}``: send ~N model events
  of the subscribed T/Q channels as fast as possible; answers when all were written
* ``POST /_sim/play``              body ``{"seconds": S, "start_ns": N, "conn": id}``: send
  the next S seconds of simulated time (burst clock, or from N when later) minute by
  minute, each minute's T/Q then its AM, as fast as the clients read
* ``POST /_sim/minute``            body ``{"minute_ns": N}`` (default: the last whole
  minute): send that minute's AM events to AM subscribers now
* ``GET  /_sim/sent[?conn=id]``    ground truth: per connection, the windows / minutes sent
* ``GET  /_sim/connections``       open and closed connections
* ``GET  /_sim/stats``             counters
* ``GET  /healthz``, ``GET /metrics`` (Prometheus) are served on the same port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from common.config import Config, SimulatorConfig
from common.metrics import NAMESPACE, new_registry
from simulator.model import MarketModel
from simulator.rest import RestApi
from simulator.stream import StreamHub, StreamSettings

log = logging.getLogger("simulator")


def settings_from(config: Config | SimulatorConfig | None = None,
                  **overrides: Any) -> SimulatorConfig:
    """A SimulatorConfig from a Config / SimulatorConfig / defaults, with field overrides."""
    if isinstance(config, Config):
        base = config.simulator
    elif config is None:
        base = SimulatorConfig()
    else:
        base = config
    given = {k: v for k, v in overrides.items() if v is not None}
    if "symbols" in given:
        given["symbols"] = list(given["symbols"])
    return dataclasses.replace(base, **given)


class Simulator:
    """The application: build with settings, then serve ``app`` (or use SimulatorServer)."""

    def __init__(self, settings: SimulatorConfig, live: bool = True,
                 status: str = "OK") -> None:
        for name in ("tick_ms", "max_frame_events", "slow_consumer_bytes", "max_connections"):
            if getattr(settings, name) < 1:
                raise ValueError(f"simulator.{name} must be at least 1")
        if settings.rest_requests_per_second < 0:
            raise ValueError("simulator.rest_requests_per_second must be >= 0 (0: no limit)")
        self.settings = settings
        self.model = MarketModel(settings.seed, settings.trades_per_second,
                                 settings.quotes_per_second, settings.symbols or None,
                                 zipf=settings.zipf, day_shape=settings.day_shape)
        self.registry = new_registry()
        self._events_sent = Counter("simulator_ws_events_sent", "WS events written, by type",
                                    ["ev"], namespace=NAMESPACE, registry=self.registry)
        self._ws_conns = Gauge("simulator_ws_connections", "Open WebSocket connections",
                               namespace=NAMESPACE, registry=self.registry)
        self.hub = StreamHub(self.model, StreamSettings(
            api_keys=frozenset(settings.api_keys), max_connections=settings.max_connections,
            slow_consumer_bytes=settings.slow_consumer_bytes, tick_ms=settings.tick_ms,
            max_frame_events=settings.max_frame_events, live=live),
            on_sent=lambda ev, n: self._events_sent.labels(ev).inc(n))
        self._ws_conns.set_function(lambda: len(self.hub.conns))
        self.rest = RestApi(self.model, settings, self.registry, status=status)
        self.app = web.Application()
        self.app.router.add_get("/stocks", self.hub.handle)
        self.rest.add_routes(self.app)
        self.app.router.add_post("/_sim/force_disconnect", self._force_disconnect)
        self.app.router.add_post("/_sim/inject", self._inject)
        self.app.router.add_post("/_sim/burst", self._burst)
        self.app.router.add_post("/_sim/play", self._play)
        self.app.router.add_post("/_sim/minute", self._minute)
        self.app.router.add_get("/_sim/sent", self._sent)
        self.app.router.add_get("/_sim/connections", self._connections)
        self.app.router.add_get("/_sim/stats", self._stats)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self.rest.add_fallback(self.app)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, _app: web.Application) -> None:
        self.hub.start()

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.hub.stop()

    # ------------------------------------------------------------------ ground truth
    def sent(self, conn_id: int | None = None) -> list[dict[str, Any]]:
        conns = {**self.hub.closed, **self.hub.conns}
        return [c.sent.to_json() for cid, c in sorted(conns.items())
                if conn_id is None or cid == conn_id]

    def sent_events(self, conn_id: int | None = None, ev: str | None = None,
                    sym: str | None = None) -> list[dict[str, Any]]:
        conns = {**self.hub.closed, **self.hub.conns}
        out: list[dict[str, Any]] = []
        for cid, c in sorted(conns.items()):
            if conn_id is None or cid == conn_id:
                out.extend(c.sent.events(self.model, ev, sym))
        return out

    def connections(self) -> list[dict[str, Any]]:
        conns = {**self.hub.closed, **self.hub.conns}
        return [c.info() for _, c in sorted(conns.items())]

    # ------------------------------------------------------------------ control routes
    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def _force_disconnect(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        ids = await self.hub.force_disconnect(body.get("conn"))
        return web.json_response({"disconnected": ids})

    async def _inject(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if "alter" in body:
            return self._inject_alteration(body)
        status = int(body.get("status", 503))
        count = int(body.get("count", 1))
        if not 400 <= status <= 599 or count < 0:
            raise web.HTTPBadRequest(text="status must be 4xx/5xx, count >= 0")
        self.rest.inject(status, count, body.get("path"))
        return web.json_response({"status": status, "count": count})

    def _inject_alteration(self, body: dict[str, Any]) -> web.Response:
        alter, path, count = body["alter"], body.get("path"), int(body.get("count", 1))
        if (not isinstance(path, str) or not isinstance(alter, dict) or count < 0
                or not isinstance(alter.get("where"), dict)
                or not isinstance(alter.get("omit", []), list)
                or not isinstance(alter.get("set", {}), dict)):
            raise web.HTTPBadRequest(text='alter needs "path", "alter": {"where": {...}, '
                                          '"omit": [...], "set": {...}}, count >= 0')
        self.rest.alter(path, alter["where"], alter.get("omit"), alter.get("set"), count)
        return web.json_response({"path": path, "alter": alter, "count": count})

    async def _burst(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        result = await self.hub.burst(int(body.get("events", 100_000)), body.get("conn"))
        return web.json_response(result)

    async def _play(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            seconds = float(body.get("seconds", 60))
            start = body.get("start_ns")
            start_ns = None if start is None else int(start)
        except (TypeError, ValueError):
            raise web.HTTPBadRequest(text='play needs "seconds" > 0 and an integer '
                                          '"start_ns" (optional)') from None
        if seconds <= 0:
            raise web.HTTPBadRequest(text='play needs "seconds" > 0')
        return web.json_response(await self.hub.play(seconds, start_ns, body.get("conn")))

    async def _minute(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        minute = int(body.get("minute_ns", time.time_ns() - 60 * 1_000_000_000))
        return web.json_response({"connections": await self.hub.send_minute(minute)})

    async def _sent(self, request: web.Request) -> web.Response:
        conn = request.query.get("conn")
        return web.Response(body=orjson.dumps(self.sent(int(conn) if conn else None)),
                            content_type="application/json")

    async def _connections(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.connections()),
                            content_type="application/json")

    async def _stats(self, _request: web.Request) -> web.Response:
        totals: dict[str, int] = {}
        for c in {**self.hub.closed, **self.hub.conns}.values():
            for ev, n in c.sent.counts.items():
                totals[ev] = totals.get(ev, 0) + n
        return web.json_response({"open_connections": len(self.hub.conns),
                                  "events_sent": totals,
                                  "rest_requests": self.rest.requests})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


class SimulatorServer:
    """The simulator in a background thread with its own event loop (for tests).

    ::

        with SimulatorServer(symbols=["AAPL"], trades_per_second=50) as sim:
            sim.url, sim.ws_url, sim.feed, sim.port, sim.model
            sim.sent_events(conn_id)
    """

    def __init__(self, config: Config | SimulatorConfig | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, live: bool = True,
                 status: str = "OK", seed: int | None = None,
                 symbols: Sequence[str] | None = None,
                 trades_per_second: float | None = None,
                 quotes_per_second: float | None = None,
                 **overrides: Any) -> None:
        self.settings = settings_from(config, host=host, port=port, seed=seed, symbols=symbols,
                                      trades_per_second=trades_per_second,
                                      quotes_per_second=quotes_per_second, **overrides)
        self.sim = Simulator(self.settings, live=live, status=status)
        self.model = self.sim.model
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.sim.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def feed(self) -> str:
        """``host:port``, what the official client takes as ``feed`` (with secure=False)."""
        return f"{self.settings.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}/stocks"

    # ------------------------------------------------------------------ in-process API
    def call(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the simulator's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _on_loop(self, fn: Any, timeout: float = 60) -> Any:
        async def run() -> Any:
            return fn()
        return self.call(run(), timeout)

    def sent(self, conn_id: int | None = None) -> list[dict[str, Any]]:
        """Per connection: frames, counts, T/Q windows [start_ns, end_ns), AM minutes."""
        return self._on_loop(lambda: self.sim.sent(conn_id))

    def sent_events(self, conn_id: int | None = None, ev: str | None = None,
                    sym: str | None = None) -> list[dict[str, Any]]:
        """The exact WS events written (regenerated from the model), per connection in
        id order, then per (type, symbol) in SIP order (T/Q), then AM minutes."""
        logs = self._on_loop(lambda: [c.sent.snapshot() for _, c in sorted(
            {**self.sim.hub.closed, **self.sim.hub.conns}.items())
            if conn_id is None or c.id == conn_id])
        out: list[dict[str, Any]] = []
        for sent in logs:
            out.extend(sent.events(self.model, ev, sym))
        return out

    def connections(self) -> list[dict[str, Any]]:
        return self._on_loop(self.sim.connections)

    def force_disconnect(self, conn_id: int | None = None) -> list[int]:
        return self.call(self.sim.hub.force_disconnect(conn_id))

    def inject(self, status: int, count: int = 1, path: str | None = None) -> None:
        self._on_loop(lambda: self.sim.rest.inject(status, count, path))

    def alter(self, path: str, where: dict[str, Any], omit: list[str] | None = None,
              set_: dict[str, Any] | None = None, count: int = 1) -> None:
        """Serve the next ``count`` matching results under ``path`` altered (see
        ``POST /_sim/inject`` with ``alter``)."""
        self._on_loop(lambda: self.sim.rest.alter(path, where, omit, set_, count))

    def send_minute(self, minute_ns: int) -> int:
        """Send the AM events of that minute to AM subscribers now (see POST /_sim/minute)."""
        return self.call(self.sim.hub.send_minute(minute_ns))

    def burst(self, events: int, conn_id: int | None = None) -> dict[str, Any]:
        return self.call(self.sim.hub.burst(events, conn_id), timeout=600)

    def play(self, seconds: float, start_ns: int | None = None,
             conn_id: int | None = None) -> dict[str, Any]:
        return self.call(self.sim.hub.play(seconds, start_ns, conn_id), timeout=600)

    def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll ``predicate(self)`` until truthy (returns its value) or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached in time")
            time.sleep(interval)
