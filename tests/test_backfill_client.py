"""The REST client against a tiny local aiohttp server: paging, retries, auth, redaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from backfill.client import MassiveRestClient, RestError, RetryPolicy, TokenBucket

KEY = "SECRETKEY123456"
FAST = RetryPolicy(max_retries=5, initial_s=0.01, max_s=0.05)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def test_pages_follow_next_url_against_base_with_bearer_only(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((str(request.rel_url), request.headers.get("Authorization")))
        page = int(request.query.get("cursor", "0"))
        if page == 2 and len([s for s in seen if "cursor=2" in s[0]]) == 1:
            return web.json_response({"status": "ERROR", "error": "slow down"}, status=429,
                                     headers={"Retry-After": "0"})
        if page == 3 and len([s for s in seen if "cursor=3" in s[0]]) == 1:
            return web.json_response({"status": "ERROR", "error": "boom"}, status=502)
        body: dict[str, Any] = {"status": "OK", "results": [{"n": page}]}
        if page < 4:
            # a next_url on another host, carrying the key: only path + query are used
            body["next_url"] = (f"https://api.massive.com/v3/trades/AAPL?cursor={page + 1}"
                                f"&apiKey={KEY}")
        return web.json_response(body)

    async def main() -> list[int]:
        runner, base = await _serve(handler)
        try:
            async with MassiveRestClient(KEY, base, retry=FAST) as client:
                got = [r[0]["n"] async for r in client.results(
                    "/v3/trades/AAPL", {"limit": "1"})]
                assert client.stats.pages == 5 and client.stats.retries == 2
                assert client.stats.throttled == 1
                return got
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert all(auth == f"Bearer {KEY}" for _, auth in seen)
    assert all(KEY not in url for url, _ in seen)
    assert seen[0][0] == "/v3/trades/AAPL?limit=1"
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert KEY not in caplog.text


def test_auth_errors_are_one_line_and_not_retried() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        status = 401 if "trades" in request.path else 404
        return web.json_response({"status": "ERROR", "request_id": "x",
                                  "error": "Unknown API Key"}, status=status)

    async def main() -> None:
        runner, base = await _serve(handler)
        try:
            async with MassiveRestClient(KEY, base, retry=FAST) as client:
                with pytest.raises(RestError) as info:
                    await client.get_json(f"/v3/trades/AAPL?apiKey={KEY}")
                assert info.value.status == 401
                message = str(info.value)
                assert "\n" not in message and KEY not in message
                assert "401" in message and "bad API key" in message
                with pytest.raises(RestError) as info:
                    await client.get_json("/v3/quotes/NOPE")
                assert info.value.status == 404
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert calls == 2


def test_gives_up_after_max_retries_with_a_clear_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "ERROR", "error": "down"}, status=503)

    async def main() -> None:
        runner, base = await _serve(handler)
        try:
            async with MassiveRestClient(KEY, base, retry=RetryPolicy(
                    max_retries=2, initial_s=0.01, max_s=0.01)) as client:
                with pytest.raises(RestError, match="after 3 attempts: HTTP 503"):
                    await client.get_json("/v3/trades/AAPL")
                assert client.stats.requests == 3
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_list_tickers_resolves_a_glob_over_pages() -> None:
    universe = ["AA", "AAPL", "ABC", "AMZN", "B", "MSFT"]

    async def handler(request: web.Request) -> web.Response:
        if "cursor" not in request.query:
            assert request.query["market"] == "stocks" and request.query["active"] == "true"
        start = int(request.query.get("cursor", "0"))
        chunk = universe[start:start + 2]
        body: dict[str, Any] = {"status": "OK", "results": [{"ticker": t} for t in chunk]}
        if start + 2 < len(universe):
            body["next_url"] = f"http://elsewhere/v3/reference/tickers?cursor={start + 2}"
        return web.json_response(body)

    async def main() -> tuple[list[str], list[str]]:
        runner, base = await _serve(handler)
        try:
            async with MassiveRestClient(KEY, base, retry=FAST) as client:
                return await client.list_tickers("A*"), await client.list_tickers("*")
        finally:
            await runner.cleanup()

    a, everything = asyncio.run(main())
    assert a == ["AA", "AAPL", "ABC", "AMZN"]
    assert everything == sorted(universe)


def test_token_bucket_limits_the_rate() -> None:
    async def main() -> float:
        bucket = TokenBucket(50.0, burst=1)
        started = time.monotonic()
        for _ in range(6):
            await bucket.acquire()
        return time.monotonic() - started

    assert asyncio.run(main()) >= 0.09  # 5 waits of 20 ms after the first token


def test_cli_never_logs_the_key_even_when_next_url_carries_it(
        tmp_path: Any, kafka_bootstrap: str) -> None:
    """A server whose next_url embeds apiKey=KEY (as the real API does for clients that
    authenticate with the query parameter), plus a retry on a cursor page to make the
    client log that URL: no output line of the CLI may carry the key."""
    import subprocess
    import sys
    import threading
    from pathlib import Path

    import yaml

    first_hits: set[str] = set()

    async def handler(request: web.Request) -> web.Response:
        assert KEY not in str(request.rel_url)
        cursor = request.query.get("cursor")
        if cursor == "2" and cursor not in first_hits:
            first_hits.add(cursor)
            return web.json_response({"status": "ERROR", "error": "try again"}, status=503,
                                     headers={"Retry-After": "0"})
        page = int(cursor or 0)
        gte = int(request.query.get("timestamp.gte") or request.query["g"])
        body: dict[str, Any] = {"status": "OK", "results": [{
            "exchange": 4, "id": str(page * 10 + i), "price": 10.0, "size": 1,
            "sequence_number": page * 10 + i, "sip_timestamp": gte + page * 10 + i}
            for i in range(10)]}
        if page < 3:
            body["next_url"] = (f"https://api.massive.com{request.path}?cursor={page + 1}"
                                f"&g={gte}&apiKey={KEY}")
        return web.json_response(body)

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder["runner"], holder["base"] = loop.run_until_complete(_serve(handler))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    tag = f"bf-key-{time.time_ns()}"
    config = Path(tmp_path) / "config.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": kafka_bootstrap, "partitions": 1,
                  "topics": {"bars": f"{tag}.bars", "trades": f"{tag}.trades",
                             "quotes": f"{tag}.quotes", "dead_letter": f"{tag}.dlq"}},
        "metrics": {"enabled": False},
        "services": {"state_dir": str(Path(tmp_path) / "state")}}))
    try:
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.run(
            [sys.executable, "-m", "massive_fetcher", "backfill", "-apiKey", KEY,
             "-baseURL", holder["base"], "-trades", "-from", "trades=2024-01-02", "-to",
             "2024-01-02", "-symbols", "AAPL", "-config", str(config), "--log-level",
             "DEBUG"], cwd=root, capture_output=True, text=True, timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cursor=2" in proc.stderr and "retrying" in proc.stderr
    assert "records   40 published" in proc.stdout
    assert KEY not in proc.stdout and KEY not in proc.stderr


@pytest.mark.parametrize("page", [{"results": {"a": 1}}, {"results": [], "next_url": 5},
                                  {"results": "x", "next_url": None}])
def test_a_malformed_page_is_a_rest_error(page: dict[str, Any]) -> None:
    """The engine fails one window on a RestError; any other exception stops the run."""
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "OK", **page})

    async def main() -> None:
        runner, base = await _serve(handler)
        try:
            async with MassiveRestClient(KEY, base, retry=FAST) as client:
                with pytest.raises(RestError, match="malformed page for /v3/trades/AAPL"):
                    async for _ in client.pages("/v3/trades/AAPL"):
                        pass
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_an_error_status_in_a_200_answer_is_named_when_giving_up() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"status": "ERROR", "error": "upstream timeout"})

    async def main() -> None:
        runner, base = await _serve(handler)
        try:
            async with MassiveRestClient(KEY, base, retry=FAST) as client:
                with pytest.raises(RestError, match="status ERROR: upstream timeout"):
                    await client.get_json("/v3/trades/AAPL")
        finally:
            await runner.cleanup()

    asyncio.run(main())
