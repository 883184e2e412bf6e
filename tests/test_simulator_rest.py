"""The simulator's REST routes: paging, limits, auth, errors, rate limits, injection."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from massive import RESTClient

from simulator import wire
from simulator.model import NS
from simulator.server import SimulatorServer

pytestmark = pytest.mark.timeout(120)

DAY = "2024-01-02"
DAY_NS = 1_704_153_600 * NS  # 2024-01-02T00:00:00Z


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(symbols=["AAPL", "MSFT", "BRK.A", "TCEHY"], trades_per_second=5,
                         quotes_per_second=4, unentitled_api_keys=["poor"],
                         live=False) as server:
        yield server


def get(url: str, key: str | None = "k", header: bool = True,
        host: str | None = None) -> tuple[int, dict[str, str], Any]:
    headers = {}
    if key is not None and header:
        headers["Authorization"] = f"Bearer {key}"
    elif key is not None:
        url += ("&" if "?" in url else "?") + f"apiKey={key}"
    if host:
        headers["Host"] = host
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def follow(first_url: str, key: str = "k") -> list[dict[str, Any]]:
    """Every page of a listing, following next_url as given."""
    pages = []
    url: str | None = first_url
    while url:
        code, _h, body = get(url, key)
        assert code == 200, body
        pages.append(body)
        url = body.get("next_url")
    return pages


def test_trades_paging_asc_and_desc_equal_the_model(sim: SimulatorServer) -> None:
    lo, hi = DAY_NS, DAY_NS + 600 * NS
    expected = wire.rest_trades(sim.model.trades("AAPL", lo, hi))
    assert len(expected) == 3000
    pages = follow(f"{sim.url}/v3/trades/AAPL?timestamp.gte={lo}&timestamp.lt={hi}"
                   "&order=asc&limit=400")
    assert len(pages) == 8
    assert all(p["status"] == "OK" and p["request_id"] for p in pages)
    assert all(len(p["results"]) == 400 for p in pages[:-1])
    assert [r for p in pages for r in p["results"]] == expected
    assert "next_url" not in pages[-1]
    pages = follow(f"{sim.url}/v3/trades/AAPL?timestamp.gte={lo}&timestamp.lt={hi}"
                   "&order=desc&limit=1000")
    assert [r for p in pages for r in p["results"]] == expected[::-1]


def test_quotes_by_date_and_default_order(sim: SimulatorServer) -> None:
    code, _h, body = get(f"{sim.url}/v3/quotes/MSFT?timestamp={DAY}&limit=5")
    assert code == 200
    day_end = DAY_NS + 86_400 * NS
    tail = wire.rest_quotes(sim.model.quotes("MSFT", day_end - 10 * NS, day_end))
    assert body["results"] == tail[::-1][:5]  # newest first by default
    assert urlparse(body["next_url"]).path == "/v3/quotes/MSFT"


def test_next_url_uses_the_host_the_client_used_and_never_the_key(sim: SimulatorServer) -> None:
    url = f"{sim.url}/v3/trades/AAPL?timestamp={DAY}&limit=10&order=asc"
    code, _h, body = get(url, "secret-key-123", header=False, host=f"example.test:{sim.port}")
    assert code == 200
    nxt = body["next_url"]
    assert nxt.startswith(f"http://example.test:{sim.port}/v3/trades/AAPL?cursor=")
    assert "secret-key-123" not in nxt and "apiKey" not in nxt
    assert set(parse_qs(urlparse(nxt).query)) == {"cursor"}


def test_aggs_paging_and_limits(sim: SimulatorServer) -> None:
    whole = follow(f"{sim.url}/v2/aggs/ticker/AAPL/range/1/minute/{DAY}/{DAY}?limit=50000")
    assert len(whole) == 1 and whole[0]["resultsCount"] == 1440
    bars = whole[0]["results"]
    assert [b["t"] for b in bars] == [DAY_NS // 1_000_000 + 60_000 * i for i in range(1440)]
    pages = follow(f"{sim.url}/v2/aggs/ticker/AAPL/range/1/minute/{DAY}/{DAY}?limit=100")
    assert len(pages) == 15
    assert [b for p in pages for b in p["results"]] == bars
    first = pages[0]
    assert set(first) == {"ticker", "queryCount", "resultsCount", "adjusted", "results",
                          "status", "request_id", "count", "next_url"}
    desc = follow(f"{sim.url}/v2/aggs/ticker/AAPL/range/1/minute/{DAY}/{DAY}"
                  "?limit=700&sort=desc")
    assert [b for p in desc for b in p["results"]] == bars[::-1]
    # limit is capped at 50000
    code, _h, body = get(f"{sim.url}/v2/aggs/ticker/AAPL/range/1/second/{DAY}/{DAY}"
                         "?limit=90000")
    assert code == 200 and body["resultsCount"] == 50000 and "next_url" in body


def test_aggs_from_to_in_ms_and_long_timespans(sim: SimulatorServer) -> None:
    start = DAY_NS // 1_000_000
    code, _h, body = get(f"{sim.url}/v2/aggs/ticker/MSFT/range/5/minute/{start}/"
                         f"{start + 3_600_000 - 1}")
    assert code == 200 and [b["t"] for b in body["results"]][:2] == [start, start + 300_000]
    assert body["resultsCount"] == 12
    for timespan, count in (("day", 1827), ("week", 262), ("month", 60), ("quarter", 20),
                            ("year", 5)):
        code, _h, body = get(f"{sim.url}/v2/aggs/ticker/AAPL/range/1/{timespan}/"
                             "2020-01-01/2024-12-31?limit=50000")
        assert code == 200 and body["resultsCount"] == count, timespan
    code, _h, body = get(f"{sim.url}/v2/aggs/ticker/TCEHY/range/1/day/{DAY}/{DAY}")
    assert body["results"][0]["otc"] is True


def test_tickers_filter_and_page(sim: SimulatorServer) -> None:
    code, _h, body = get(f"{sim.url}/v3/reference/tickers?market=stocks&active=true")
    assert code == 200
    assert [r["ticker"] for r in body["results"]] == ["AAPL", "BRK.A", "MSFT"]
    assert body["results"][0]["market"] == "stocks" and body["count"] == 3
    pages = follow(f"{sim.url}/v3/reference/tickers?limit=1&ticker.gte=B")
    assert [r["ticker"] for p in pages for r in p["results"]] == ["BRK.A", "MSFT", "TCEHY"]


def test_tickers_limit_is_capped_at_1000() -> None:
    names = [f"Z{i:04d}" for i in range(1200)]
    with SimulatorServer(symbols=names, live=False) as sim:
        code, _h, body = get(f"{sim.url}/v3/reference/tickers?limit=5000")
        assert code == 200 and body["count"] == 1000 and "next_url" in body
        client = RESTClient("k", base=sim.url)
        assert [t.ticker for t in client.list_tickers(limit=1000)] == names


@pytest.mark.parametrize("header", [True, False])
def test_auth_modes_and_errors(sim: SimulatorServer, header: bool) -> None:
    url = f"{sim.url}/v3/trades/AAPL?timestamp={DAY}&limit=1"
    assert get(url, "k", header=header)[0] == 200
    code, _h, body = get(url, None)
    assert code == 401 and body["status"] == "ERROR" and body["request_id"] and body["error"]
    code, _h, body = get(url, "poor", header=header)
    assert code == 403 and body["status"] == "ERROR"
    code, _h, body = get(f"{sim.url}/v3/trades/NOPE?limit=1", "k", header=header)
    assert code == 404 and body["status"] == "ERROR"
    code, _h, body = get(f"{sim.url}/v9/whatever", "k", header=header)
    assert code == 404 and body["status"] == "ERROR"
    code, _h, body = get(f"{sim.url}/v3/trades/AAPL?limit=x", "k", header=header)
    assert code == 400 and body["status"] == "ERROR"


def test_unknown_key_gets_401_when_keys_are_configured() -> None:
    with SimulatorServer(symbols=["AAPL"], api_keys=["good"], live=False) as sim:
        url = f"{sim.url}/v3/reference/tickers"
        assert get(url, "good")[0] == 200
        code, _h, body = get(url, "bad")
        assert code == 401 and body["error"] == "Unknown API Key"


def test_rate_limit_429_with_retry_after() -> None:
    with SimulatorServer(symbols=["AAPL"], rest_requests_per_second=2, live=False) as sim:
        url = f"{sim.url}/v3/reference/tickers"
        codes = []
        for _ in range(6):
            code, headers, body = get(url, "k")
            codes.append(code)
            if code == 429:
                assert int(headers["Retry-After"]) >= 1
                assert body["status"] == "ERROR"
        assert codes[:2] == [200, 200] and 429 in codes
        assert get(url, "other")[0] == 200  # the limit is per key


def test_injected_errors(sim: SimulatorServer) -> None:
    url = f"{sim.url}/v3/reference/tickers"
    body = json.dumps({"status": 503, "count": 2, "path": "/v3/reference"}).encode()
    req = urllib.request.Request(f"{sim.url}/_sim/inject", data=body, method="POST")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
    first, second, third = get(url), get(url), get(url)
    assert first[0] == second[0] == 503 and first[2]["status"] == "ERROR"
    assert third[0] == 200
    # The official client retries 5xx and gets through.
    sim.inject(502, 2)
    client = RESTClient("k", base=sim.url)
    assert len(list(client.list_tickers())) == 4


def test_injected_alteration_changes_only_the_matching_results(sim: SimulatorServer) -> None:
    """A one-sided quote (no bid) and a malformed one, served inside normal answers."""
    url = (f"{sim.url}/v3/quotes/MSFT?timestamp.gte={DAY_NS}&timestamp.lt={DAY_NS + 10 * NS}"
           "&order=asc&limit=1000")
    truth = get(url)[2]["results"]
    one_sided, malformed = truth[3], truth[7]
    body = json.dumps({"path": "/v3/quotes/MSFT", "count": 1, "alter": {
        "where": {"sequence_number": one_sided["sequence_number"]},
        "omit": ["bid_price", "bid_size"]}}).encode()
    req = urllib.request.Request(f"{sim.url}/_sim/inject", data=body, method="POST")
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 200
    sim.alter("/v3/quotes/MSFT", {"sequence_number": malformed["sequence_number"]},
              omit=["sip_timestamp"], set_={"ask_price": "n/a"}, count=1)
    altered = get(url)[2]["results"]
    expected = [dict(r) for r in truth]
    del expected[3]["bid_price"], expected[3]["bid_size"]
    del expected[7]["sip_timestamp"]
    expected[7]["ask_price"] = "n/a"
    assert altered == expected
    assert get(url)[2]["results"] == truth  # each alteration was used up
    bad = urllib.request.Request(f"{sim.url}/_sim/inject", method="POST",
                                 data=json.dumps({"alter": {"omit": ["x"]}}).encode())
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(bad)
    assert info.value.code == 400


def test_official_client_pages_through_everything(sim: SimulatorServer) -> None:
    client = RESTClient("k", base=sim.url)
    lo, hi = DAY_NS, DAY_NS + 300 * NS
    trades = list(client.list_trades("BRK.A", timestamp_gte=lo, timestamp_lt=hi,
                                      order="asc", limit=333))
    expected = wire.rest_trades(sim.model.trades("BRK.A", lo, hi))
    assert len(trades) == len(expected) == 1500
    assert [(t.sequence_number, t.price, t.size, t.sip_timestamp, t.id) for t in trades] == [
        (e["sequence_number"], e["price"], e["size"], e["sip_timestamp"], e["id"])
        for e in expected]
    quotes = list(client.list_quotes("TCEHY", timestamp_gte=lo, timestamp_lt=hi, limit=250))
    assert len(quotes) == 1200 and quotes[0].sip_timestamp > quotes[-1].sip_timestamp
    aggs = list(client.list_aggs("MSFT", 1, "minute", DAY, DAY, limit=250))
    assert len(aggs) == 1440 and all(a.transactions == 300 for a in aggs)
    hours = list(client.list_aggs("MSFT", 1, "hour", DAY, DAY))
    assert sum(a.transactions for a in hours) == sum(a.transactions for a in aggs)
    tickers = list(client.list_tickers(market="stocks", limit=1))
    assert [t.ticker for t in tickers] == ["AAPL", "BRK.A", "MSFT"]


def test_delayed_status() -> None:
    with SimulatorServer(symbols=["AAPL"], live=False, status="DELAYED") as sim:
        code, _h, body = get(f"{sim.url}/v3/trades/AAPL?timestamp={DAY}&limit=1")
        assert code == 200 and body["status"] == "DELAYED"
