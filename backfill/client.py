"""Async Massive REST client: auth header, paging, rate limit, retries with backoff.

The key travels only in the ``Authorization: Bearer`` header. ``next_url`` is followed the
way the official client does it (its path and query re-sent to the configured base URL),
with any ``apiKey`` parameter removed first, so neither a request nor a log line carries it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import orjson
import yarl

from backfill.symbols import glob_prefix, match_glob
from common.backoff import backoff_s

log = logging.getLogger("backfill.client")

RETRY_STATUSES = frozenset({413, 429, 499, 500, 502, 503, 504})
RETRY_LOG_FIRST = 10
RETRY_LOG_INTERVAL_S = 5.0
_APIKEY_PARAM = re.compile(r"(?i)([?&])apikey=[^&#]*&?")
# A response body -> the page, or None to decode it as JSON (see MassiveRestClient.pages).
Decode = Callable[[bytes], "dict[str, Any] | None"]


class RestError(Exception):
    """A request that failed for good (bad key, unknown route, retries exhausted).

    ``str()`` is one line without any secret.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def strip_api_key(url: str) -> str:
    """``url`` without any ``apiKey`` query parameter (for requests and for logs)."""
    cleaned = _APIKEY_PARAM.sub(lambda m: m.group(1), url)
    return cleaned.rstrip("?&").replace("?&", "?")


def path_and_query(url: str) -> str:
    """The path + query of a (next_url) URL, without apiKey, to re-send to our base."""
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k.lower() != "apikey"])
    return parts.path + (f"?{query}" if query else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class TokenBucket:
    """``rate`` requests per second with bursts up to ``burst``; rate <= 0 = unlimited."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


@dataclass
class ClientStats:
    requests: int = 0
    pages: int = 0
    retries: int = 0
    throttled: int = 0  # 429 answers
    server_errors: int = 0  # 5xx/413/499 answers and transport errors
    bytes: int = 0
    http_s: float = 0.0  # wall time waiting for response bodies, summed over requests
    json_s: float = 0.0  # CPU time decoding them
    by_status: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 10
    initial_s: float = 0.25
    max_s: float = 30.0
    # never wait longer than this for one Retry-After (a hostile value must not hang us)
    max_retry_after_s: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: a random point in the upper half of the step."""
        return backoff_s(attempt, self.initial_s, self.max_s)


class MassiveRestClient:
    """One aiohttp session against ``base_url``; use as ``async with``."""

    def __init__(self, api_key: str, base_url: str, *, concurrency: int = 8,
                 rate_per_s: float = 0.0, timeout_s: float = 30.0,
                 retry: RetryPolicy | None = None, user_agent: str = "massive-fetcher") -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._bucket = TokenBucket(rate_per_s)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
        self._retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept-Encoding": "gzip",
                         "User-Agent": user_agent}
        self._concurrency = max(1, concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.stats = ClientStats()
        self._last_retry_log = 0.0
        self._retries_logged = 0

    async def __aenter__(self) -> MassiveRestClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._concurrency * 2)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _redact(self, text: str) -> str:
        return strip_api_key(text).replace(self._api_key, "***")

    async def get_json(self, path: str, params: Mapping[str, str] | None = None,
                       decode: Decode | None = None) -> dict[str, Any]:
        """GET ``path`` (may carry a query) with ``params``; retried; returns the JSON body,
        or what ``decode`` makes of it (when not None: see :meth:`pages`)."""
        await self.open()
        assert self._session is not None
        target = path if not params else f"{path}{'&' if '?' in path else '?'}{urlencode(params)}"
        target = strip_api_key(target)
        url = yarl.URL(self.base_url + target, encoded=True)
        shown = self._redact(target)
        attempt = 0
        while True:
            await self._bucket.acquire()
            wait: float | None = None
            reason = ""
            async with self._semaphore:
                self.stats.requests += 1
                started = time.perf_counter()
                try:
                    async with self._session.get(url, allow_redirects=False) as resp:
                        body = await resp.read()
                        status = resp.status
                        retry_after = resp.headers.get("Retry-After")
                except (TimeoutError, aiohttp.ClientError) as exc:
                    self.stats.http_s += time.perf_counter() - started
                    self.stats.server_errors += 1
                    status, body, retry_after = 0, b"", None
                    reason = self._redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
                else:
                    self.stats.http_s += time.perf_counter() - started
                    self.stats.bytes += len(body)
                    self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            if status == 200:
                data = decode(body) if decode is not None else None
                if data is None:
                    started = time.thread_time()
                    try:
                        data = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        data = None
                    self.stats.json_s += time.thread_time() - started
                if isinstance(data, dict) and data.get("status") != "ERROR":
                    return data
                status, reason = 0, ("HTTP 200 with status ERROR: " + _error_message(body)
                                     if isinstance(data, dict) else "invalid JSON body")
            elif status:
                message = _error_message(body)
                if status not in RETRY_STATUSES:
                    hint = {401: "bad API key", 403: "key not entitled to this data",
                            404: "not found"}.get(status, "request rejected")
                    raise RestError(self._redact(f"HTTP {status} ({hint}) for {shown}: "
                                                 f"{message}"), status)
                if status == 429:
                    self.stats.throttled += 1
                else:
                    self.stats.server_errors += 1
                reason = f"HTTP {status}: {message}"
                wait = parse_retry_after(retry_after)
                if wait is not None:
                    wait = min(wait, self._retry.max_retry_after_s)
            if attempt >= self._retry.max_retries:
                raise RestError(self._redact(f"giving up on {shown} after {attempt + 1} "
                                             f"attempts: {reason}"), status or None)
            delay = wait if wait is not None else self._retry.backoff(attempt)
            attempt += 1
            self.stats.retries += 1
            self._log_retry(shown, delay, self._redact(reason), attempt)
            await asyncio.sleep(delay)

    def _log_retry(self, shown: str, delay: float, reason: str, attempt: int) -> None:
        """Every retry for the first few, then one line per interval: a 429 storm must not
        flood the log (the totals are in ``stats`` and the summary)."""
        now = time.monotonic()
        if self.stats.retries <= RETRY_LOG_FIRST or now - self._last_retry_log >= \
                RETRY_LOG_INTERVAL_S:
            quiet = self.stats.retries - self._retries_logged - 1
            self._last_retry_log = now
            self._retries_logged = self.stats.retries
            log.warning("retrying %s in %.2fs (%s), attempt %d%s", shown, delay, reason,
                        attempt, f"; {quiet} more retries since the last line" if quiet else "")

    async def pages(self, path: str, params: Mapping[str, str] | None = None,
                    decode: Decode | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Every page of a listing, following ``next_url`` until it is absent.

        ``decode`` (the compiled page encoder's, ``backfill.nativepages``) reads a response
        body in place of ``orjson.loads``: it returns the page, or None to leave the body to
        orjson; what it returns is checked like any page."""
        target: str | None = path
        query: Mapping[str, str] | None = params
        while target is not None:
            page = await self.get_json(target, query, decode)
            results, next_url = page.get("results"), page.get("next_url")
            if not isinstance(results, list | None) or not isinstance(next_url, str | None):
                # a RestError fails this listing only; a TypeError further on would be
                # taken for a bug and stop the whole backfill
                raise RestError(self._redact(
                    f"malformed page for {target}: 'results' must be a list and 'next_url' "
                    f"a string, got {type(results).__name__} and {type(next_url).__name__}"))
            self.stats.pages += 1
            yield page
            target = path_and_query(next_url) if next_url else None
            query = None

    async def results(self, path: str,
                      params: Mapping[str, str] | None = None) -> AsyncIterator[list[dict]]:
        async for page in self.pages(path, params):
            yield page.get("results") or []

    async def list_tickers(self, pattern: str = "*", market: str = "stocks",
                           limit: int = 1000) -> list[str]:
        """Active tickers of ``market`` matching the glob ``pattern`` (``*`` = all)."""
        params = {"market": market, "active": "true", "limit": str(min(limit, 1000)),
                  "order": "asc", "sort": "ticker"}
        prefix = glob_prefix(pattern)
        if prefix:
            # narrow the listing server-side: tickers in [prefix, prefix + U+FFFF)
            params["ticker.gte"] = prefix
            params["ticker.lt"] = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        found: list[str] = []
        async for results in self.results("/v3/reference/tickers", params):
            found.extend(r["ticker"] for r in results
                         if isinstance(r, dict) and isinstance(r.get("ticker"), str))
        return sorted({t for t in found if match_glob(pattern, t)})


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text.splitlines()[0] if text else "no body")[:200]
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or data.get("status") or data)[:200]
    return str(data)[:200]
