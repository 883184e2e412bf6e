"""The simulator's tickers: reference data for the default universe and for any other symbol."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TickerInfo:
    ticker: str
    name: str
    base_price: float
    primary_exchange: str  # MIC, as /v3/reference/tickers reports it
    type: str  # CS, ETF, ADRC, ...
    market: str  # "stocks" or "otc"
    tape: int | None  # 1 = A (NYSE), 2 = B (Arca/regionals), 3 = C (Nasdaq); None for OTC

    @property
    def otc(self) -> bool:
        return self.market == "otc"

    def reference(self) -> dict[str, object]:
        """The /v3/reference/tickers result object."""
        ref: dict[str, object] = {
            "ticker": self.ticker,
            "name": self.name,
            "market": self.market,
            "locale": "us",
            "primary_exchange": self.primary_exchange,
            "type": self.type,
            "active": True,
            "currency_name": "usd",
            "last_updated_utc": "2024-01-02T00:00:00Z",
        }
        if self.market == "otc":
            del ref["primary_exchange"]
        return ref


def _t(ticker: str, name: str, price: float, mic: str, kind: str = "CS") -> TickerInfo:
    tape = {"XNAS": 3, "XNYS": 1, "ARCX": 2, "BATS": 2}.get(mic)
    market = "otc" if mic == "OTC" else "stocks"
    return TickerInfo(ticker, name, price, mic, kind, market, tape)


DEFAULT_TICKERS: tuple[TickerInfo, ...] = (
    _t("AAPL", "Apple Inc.", 190.0, "XNAS"),
    _t("AMD", "Advanced Micro Devices, Inc.", 150.0, "XNAS"),
    _t("AMZN", "Amazon.com, Inc.", 180.0, "XNAS"),
    _t("BRK.A", "Berkshire Hathaway Inc. Class A", 620000.0, "XNYS"),
    _t("BRK.B", "Berkshire Hathaway Inc. Class B", 410.0, "XNYS"),
    _t("F", "Ford Motor Company", 12.0, "XNYS"),
    _t("GOOGL", "Alphabet Inc. Class A", 170.0, "XNAS"),
    _t("IBM", "International Business Machines Corporation", 185.0, "XNYS"),
    _t("INTC", "Intel Corporation", 30.0, "XNAS"),
    _t("JPM", "JPMorgan Chase & Co.", 200.0, "XNYS"),
    _t("META", "Meta Platforms, Inc. Class A", 500.0, "XNAS"),
    _t("MSFT", "Microsoft Corporation", 410.0, "XNAS"),
    _t("NVDA", "NVIDIA Corporation", 120.0, "XNAS"),
    _t("QQQ", "Invesco QQQ Trust, Series 1", 440.0, "XNAS", "ETF"),
    _t("SPY", "SPDR S&P 500 ETF Trust", 520.0, "ARCX", "ETF"),
    _t("TSLA", "Tesla, Inc. Common Stock", 240.0, "XNAS"),
    _t("TCEHY", "Tencent Holdings Ltd. Unsponsored ADR", 45.0, "OTC", "ADRC"),
    _t("HMBL", "HUMBL, Inc. Common Stock", 0.0123, "OTC"),
)

_DEFAULT_BY_TICKER = {t.ticker: t for t in DEFAULT_TICKERS}


def ticker_info(symbol: str) -> TickerInfo:
    """Reference data for ``symbol``: the built-in entry, else one derived from its name.

    Any symbol a test invents (``ZZT1A2B``) gets a stable listed-stock profile, so tests can
    isolate themselves by unique symbols and still get data.
    """
    known = _DEFAULT_BY_TICKER.get(symbol)
    if known is not None:
        return known
    h = int.from_bytes(hashlib.blake2b(symbol.encode(), digest_size=8).digest(), "little")
    price = round(10.0 + (h % 49000) / 100.0, 2)
    mic = ("XNAS", "XNYS", "ARCX")[(h >> 20) % 3]
    return _t(symbol, f"{symbol} Simulated Corp.", price, mic)
