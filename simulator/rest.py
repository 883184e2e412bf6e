"""Massive's REST routes for the model: custom bars, v3 trades/quotes, reference tickers.

Requests pass, in order: injected errors (``POST /_sim/inject``), auth (``Authorization:
Bearer KEY`` or ``apiKey=KEY``: 401 when missing or unknown, 403 for an unentitled key),
the per-key request rate (429 with ``Retry-After``), then the route. Every error is JSON
``{"status": "ERROR", "request_id": ..., "error": ...}``. For tests of odd data, an
injected alteration (``POST /_sim/inject`` with ``alter``) removes or replaces fields of
the results that match it, in otherwise normal answers.

Paging: a truncated answer carries ``next_url`` = the address the client used (its Host
header) + the path + ``?cursor=<base64 of a query string>``, never the API key (a client
that authenticates with ``apiKey=`` adds it again, as with the real API). A request with a
``cursor`` takes its parameters from the cursor only.

Defaults as the real API: aggs ``sort=asc``, ``limit=5000``; trades/quotes ``order=desc``,
``sort=timestamp``, ``limit=1000``; tickers ``order=asc``, ``sort=ticker``, ``limit=100``.
Data ends at the current time: nothing later than "now" is ever returned.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from common.config import SimulatorConfig
from common.metrics import NAMESPACE
from simulator import wire
from simulator.model import DATA_START_S, DAY_NS, MS, NS, MarketModel

TIMESPANS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
AGGS_MAX_LIMIT = 50_000
TRADES_MAX_LIMIT = 50_000
TICKERS_MAX_LIMIT = 1_000
MSG_RATE = ("You've exceeded the maximum requests per minute, please wait or upgrade your "
            "subscription to continue. https://massive.com/pricing")
MSG_UNENTITLED = ("You are not entitled to this data. Please upgrade your plan at "
                  "https://massive.com/pricing")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def request_id() -> str:
    return uuid.uuid4().hex


def json_response(body: Mapping[str, Any], status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def error_response(status: int, message: str,
                   headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response({"status": "ERROR", "request_id": request_id(), "error": message},
                         status, headers)


def encode_cursor(params: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(urlencode(params).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return dict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid cursor") from None


def parse_time_ns(value: str, name: str, end_of_day: bool = False) -> int:
    """A date ``YYYY-MM-DD`` (start of the UTC day, or its last ns with ``end_of_day``),
    an ISO datetime, or an integer of nanoseconds."""
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            ns = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * NS
            return ns + DAY_NS - 1 if end_of_day else ns
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return int(moment.timestamp() * 1_000_000) * 1000
    except ValueError:
        raise ApiError(400, f"invalid {name}: {value!r}") from None


def parse_aggs_time_ms(value: str, name: str, end_of_day: bool) -> int:
    """Aggs ``from``/``to``: a date or Unix milliseconds. Returns ns."""
    if value.strip().isdigit():
        return int(value) * MS
    return parse_time_ns(value, name, end_of_day)


def parse_limit(value: str | None, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError:
        raise ApiError(400, f"invalid limit: {value!r}") from None
    if limit < 1:
        raise ApiError(400, "limit must be at least 1")
    return min(limit, maximum)


def parse_choice(value: str | None, default: str, choices: tuple[str, ...], name: str) -> str:
    if value is None or value == "":
        return default
    if value not in choices:
        raise ApiError(400, f"invalid {name}: {value!r} (one of {', '.join(choices)})")
    return value


@dataclass
class _Injected:
    status: int
    remaining: int
    path: str | None


@dataclass
class _Alteration:
    """Results under ``path`` whose fields equal ``where`` lose ``omit`` and get ``set``;
    ``remaining`` results more."""

    path: str
    where: dict[str, Any]
    omit: list[str]
    set: dict[str, Any]
    remaining: int

    def apply(self, results: list[Any]) -> None:
        for result in results:
            if self.remaining <= 0:
                return
            if isinstance(result, dict) and all(
                    result.get(k) == v for k, v in self.where.items()):
                for name in self.omit:
                    result.pop(name, None)
                result.update(self.set)
                self.remaining -= 1


class RestApi:
    def __init__(self, model: MarketModel, settings: SimulatorConfig,
                 registry: CollectorRegistry, status: str = "OK") -> None:
        self.model = model
        self.settings = settings
        self.status = status
        self.requests = 0
        self._injected: list[_Injected] = []
        self._alterations: list[_Alteration] = []
        self._keys = frozenset(settings.api_keys)
        self._unentitled = frozenset(settings.unentitled_api_keys)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._counter = Counter("simulator_rest_requests", "REST requests by route and status",
                                ["route", "code"], namespace=NAMESPACE, registry=registry)

    def add_routes(self, app: web.Application) -> None:
        route = app.router.add_get
        route("/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}",
              self._wrap("aggs", self.aggs))
        route("/v3/trades/{ticker}", self._wrap("trades", self.trades))
        route("/v3/quotes/{ticker}", self._wrap("quotes", self.quotes))
        route("/v3/reference/tickers", self._wrap("tickers", self.tickers))

    def add_fallback(self, app: web.Application) -> None:
        """A JSON 404 for every other GET (register it after all other routes)."""
        app.router.add_get("/{tail:.*}", self._wrap("unknown", self._not_found))

    def inject(self, status: int, count: int, path: str | None = None) -> None:
        if count > 0:
            self._injected.append(_Injected(status, count, path))

    def alter(self, path: str, where: Mapping[str, Any], omit: list[str] | None = None,
              set_: Mapping[str, Any] | None = None, count: int = 1) -> None:
        """The next ``count`` results served under ``path`` whose fields equal ``where``
        lose the fields ``omit`` and get ``set_`` (the answer is otherwise unchanged)."""
        if count > 0:
            self._alterations.append(_Alteration(path, dict(where), list(omit or []),
                                                 dict(set_ or {}), count))

    # ------------------------------------------------------------------ gatekeeping
    def _wrap(self, name: str, handler: Callable[[web.Request], Awaitable[dict[str, Any]]]
              ) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            self.requests += 1
            try:
                response = self._gate(request)
                if response is None:
                    body = await handler(request)
                    self._alter(request.path, body)
                    response = json_response(body)
            except ApiError as exc:
                response = error_response(exc.status, exc.message)
            self._counter.labels(name, str(response.status)).inc()
            return response
        return wrapped

    def _alter(self, path: str, body: dict[str, Any]) -> None:
        results = body.get("results")
        if not self._alterations or not isinstance(results, list):
            return
        for alteration in self._alterations:
            if path.startswith(alteration.path):
                alteration.apply(results)
        self._alterations = [a for a in self._alterations if a.remaining > 0]

    def _gate(self, request: web.Request) -> web.Response | None:
        for inj in self._injected:
            if inj.remaining > 0 and (inj.path is None or request.path.startswith(inj.path)):
                inj.remaining -= 1
                self._injected = [i for i in self._injected if i.remaining > 0]
                return error_response(inj.status, f"injected error {inj.status}")
        key = self._key(request)
        if not key:
            return error_response(401, "API Key was not provided")
        if key in self._unentitled:
            return error_response(403, MSG_UNENTITLED)
        if self._keys and key not in self._keys:
            return error_response(401, "Unknown API Key")
        wait = self._rate_wait(key)
        if wait > 0:
            return error_response(429, MSG_RATE, {"Retry-After": str(max(1, math.ceil(wait)))})
        return None

    @staticmethod
    def _key(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return auth[7:].strip()
        return request.query.get("apiKey") or None

    def _rate_wait(self, key: str) -> float:
        """Token bucket per key: ``rest_requests_per_second`` tokens/s, bursts of that many."""
        rate = self.settings.rest_requests_per_second
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        capacity = max(1.0, rate)
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / rate

    async def _not_found(self, _request: web.Request) -> dict[str, Any]:
        raise ApiError(404, "not found")

    def _ticker(self, request: web.Request) -> str:
        ticker = request.match_info["ticker"]
        if not self.model.knows(ticker):
            raise ApiError(404, f"ticker not found: {ticker}")
        return ticker

    @staticmethod
    def _next_url(request: web.Request, path: str, cursor: Mapping[str, Any]) -> str:
        return f"{request.scheme}://{request.host}{path}?cursor={encode_cursor(cursor)}"

    @staticmethod
    async def _compute(fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    # ------------------------------------------------------------------ aggs
    async def aggs(self, request: web.Request) -> dict[str, Any]:
        ticker = self._ticker(request)
        info = request.match_info
        try:
            multiplier = int(info["multiplier"])
        except ValueError:
            raise ApiError(400, f"invalid multiplier: {info['multiplier']!r}") from None
        if multiplier < 1:
            raise ApiError(400, "multiplier must be at least 1")
        timespan = info["timespan"]
        if timespan not in TIMESPANS:
            raise ApiError(400, f"invalid timespan: {timespan!r}")
        q: Mapping[str, str] = request.query
        if "cursor" in q:
            q = decode_cursor(q["cursor"])
        adjusted = parse_choice(q.get("adjusted"), "true", ("true", "false"), "adjusted")
        sort = parse_choice(q.get("sort"), "asc", ("asc", "desc"), "sort")
        limit = parse_limit(q.get("limit"), 5000, AGGS_MAX_LIMIT)
        start = parse_aggs_time_ms(info["from"], "from", end_of_day=False)
        end = parse_aggs_time_ms(info["to"], "to", end_of_day=True)  # inclusive
        now = time.time_ns()
        desc = sort == "desc"
        bars = await self._compute(lambda: self.model.bars(
            ticker, multiplier, timespan, start, end + 1, now, desc, limit + 1))
        more = len(bars) > limit
        if more:
            nxt = int(bars.start_ns[0] if desc else bars.start_ns[-1]) // MS
            bars = bars.take(slice(1, None) if desc else slice(0, limit))
        results = wire.rest_bars(bars, self.model.info(ticker).otc)
        if desc:
            results.reverse()
        body: dict[str, Any] = {"ticker": ticker, "queryCount": len(results),
                                "resultsCount": len(results),
                                "adjusted": adjusted == "true"}
        if results:
            body["results"] = results
        body.update(status=self.status, request_id=request_id(), count=len(results))
        if more:
            lo, hi = (info["from"], str(nxt)) if desc else (str(nxt), info["to"])
            path = (f"/v2/aggs/ticker/{quote(ticker)}/range/{multiplier}/{timespan}/"
                    f"{lo}/{hi}")
            body["next_url"] = self._next_url(
                request, path, {"adjusted": adjusted, "limit": limit, "sort": sort})
        return body

    # ------------------------------------------------------------------ trades / quotes
    def _window(self, q: Mapping[str, str], now: int) -> tuple[int, int]:
        """[lo, hi) in ns from ``timestamp`` and its ``.gte/.gt/.lte/.lt`` variants."""
        lo, hi = DATA_START_S * NS, now + 1
        if "lo" in q:  # from a cursor
            return int(q["lo"]), int(q["hi"])
        if q.get("timestamp"):
            stamp = q["timestamp"]
            if len(stamp) == 10 and not stamp.isdigit():
                lo = parse_time_ns(stamp, "timestamp")
                hi = lo + DAY_NS
            else:
                lo = parse_time_ns(stamp, "timestamp")
                hi = lo + 1
        for op in ("gte", "gt", "lte", "lt"):
            value = q.get(f"timestamp.{op}")
            if not value:
                continue
            day = len(value) == 10 and not value.isdigit()
            if op == "gte":
                lo = max(lo, parse_time_ns(value, "timestamp.gte"))
            elif op == "gt":
                lo = max(lo, parse_time_ns(value, "timestamp.gt", end_of_day=day) + 1)
            elif op == "lte":
                hi = min(hi, parse_time_ns(value, "timestamp.lte", end_of_day=day) + 1)
            else:
                hi = min(hi, parse_time_ns(value, "timestamp.lt"))
        return lo, min(hi, now + 1)

    async def _ticks(self, request: web.Request, kind: str) -> dict[str, Any]:
        ticker = self._ticker(request)
        q: Mapping[str, str] = request.query
        if "cursor" in q:
            q = decode_cursor(q["cursor"])
        order = parse_choice(q.get("order"), "desc", ("asc", "desc"), "order")
        parse_choice(q.get("sort"), "timestamp", ("timestamp",), "sort")
        limit = parse_limit(q.get("limit"), 1000, TRADES_MAX_LIMIT)
        lo, hi = self._window(q, time.time_ns())
        rate = (self.model.trades_per_second if kind == "trades"
                else self.model.quotes_per_second)
        cols, more = await self._compute(
            lambda: self._collect(ticker, kind, lo, hi, order == "desc", limit, rate))
        rows = wire.rest_trades(cols) if kind == "trades" else wire.rest_quotes(cols)
        if order == "desc":
            rows.reverse()
        body: dict[str, Any] = {"results": rows, "status": self.status,
                                "request_id": request_id()}
        if more:
            last = int(cols.sip[0] if order == "desc" else cols.sip[-1])
            nlo, nhi = (lo, last) if order == "desc" else (last + 1, hi)
            body["next_url"] = self._next_url(
                request, f"/v3/{kind}/{quote(ticker)}",
                {"lo": nlo, "hi": nhi, "limit": limit, "order": order, "sort": "timestamp"})
        return body

    def _collect(self, ticker: str, kind: str, lo: int, hi: int, desc: bool, limit: int,
                 rate: float) -> tuple[Any, bool]:
        """Up to ``limit`` events nearest the start (asc) or end (desc) of [lo, hi), and
        whether more exist. Walks in chunks sized to hold about ``limit`` events."""
        fetch = self.model.trades if kind == "trades" else self.model.quotes
        if rate <= 0 or hi <= lo:
            return fetch(ticker, 0, 0), False
        chunk = int(min(max((limit + 1) / rate * 1.1, 1.0), 7 * 86_400.0) * NS)
        parts = []
        found = 0
        a, b = (hi - chunk, hi) if desc else (lo, lo + chunk)
        while True:
            a, b = max(a, lo), min(b, hi)
            part = fetch(ticker, a, b)
            if len(part):
                parts.append(part)
                found += len(part)
            if found > limit or (desc and a <= lo) or (not desc and b >= hi):
                break
            a, b = (a - chunk, a) if desc else (b, b + chunk)
        if desc:
            parts.reverse()
        cols = _concat(parts) if parts else fetch(ticker, 0, 0)
        more = len(cols) > limit
        if more:
            cols = cols.take(slice(len(cols) - limit, None) if desc else slice(0, limit))
        return cols, more

    async def trades(self, request: web.Request) -> dict[str, Any]:
        return await self._ticks(request, "trades")

    async def quotes(self, request: web.Request) -> dict[str, Any]:
        return await self._ticks(request, "quotes")

    # ------------------------------------------------------------------ tickers
    async def tickers(self, request: web.Request) -> dict[str, Any]:
        q: Mapping[str, str] = request.query
        if "cursor" in q:
            q = decode_cursor(q["cursor"])
        limit = parse_limit(q.get("limit"), 100, TICKERS_MAX_LIMIT)
        order = parse_choice(q.get("order"), "asc", ("asc", "desc"), "order")
        parse_choice(q.get("sort"), "ticker", ("ticker",), "sort")
        active = parse_choice(q.get("active"), "true", ("true", "false"), "active")
        infos = sorted((self.model.info(s) for s in self.model.symbols),
                       key=lambda i: i.ticker, reverse=order == "desc")
        rows = []
        for info in infos:
            t = info.ticker
            if active != "true":
                continue  # every simulated ticker is active
            if q.get("market") and info.market != q["market"]:
                continue
            if q.get("type") and info.type != q["type"]:
                continue
            if q.get("ticker") and t != q["ticker"]:
                continue
            if q.get("ticker.gte") and not t >= q["ticker.gte"]:
                continue
            if q.get("ticker.gt") and not t > q["ticker.gt"]:
                continue
            if q.get("ticker.lte") and not t <= q["ticker.lte"]:
                continue
            if q.get("ticker.lt") and not t < q["ticker.lt"]:
                continue
            if q.get("search") and q["search"].lower() not in (t + " " + info.name).lower():
                continue
            rows.append(info.reference())
        more = len(rows) > limit
        rows = rows[:limit]
        body: dict[str, Any] = {"results": rows, "status": "OK", "request_id": request_id(),
                                "count": len(rows)}
        if more:
            cursor: dict[str, object] = {k: v for k, v in q.items()
                                         if k not in ("cursor", "apiKey", "limit")}
            cursor["ticker.gt" if order == "asc" else "ticker.lt"] = rows[-1]["ticker"]
            cursor["limit"] = str(limit)
            body["next_url"] = self._next_url(request, "/v3/reference/tickers", cursor)
        return body


def _concat(parts: list[Any]) -> Any:
    first = parts[0]
    if len(parts) == 1:
        return first
    kwargs = {}
    for name, value in vars(first).items():
        if isinstance(value, np.ndarray):
            kwargs[name] = np.concatenate([getattr(p, name) for p in parts])
        else:
            kwargs[name] = value
    return type(first)(**kwargs)
