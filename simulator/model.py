"""A deterministic market: trades, quotes and bars as pure functions of (seed, symbol, time).

Nothing here keeps state that changes an answer: every value is computed from a
counter-based hash (splitmix64) of the seed, the symbol, the UTC second and the event's
index inside that second, so any window can be generated on its own and two windows
that overlap agree on the overlap. (A small cache of per-day minute aggregates only saves
time.)

Documented choices
------------------
* Trading is continuous, 24 hours a day, 7 days a week, from ``DATA_START_S``
  (2000-01-01) on, so live streams have data whenever a test runs, and REST answers for
  any date range. A "day" is the UTC day.
* Each (symbol, UTC second) slot holds ``floor(rate)`` or ``floor(rate) + 1`` trades and
  quotes (the fraction decided by the hash), spread over the second in order and
  interleaved, so SIP nanosecond timestamps are distinct and increasing per symbol.
* Activity (optional, off by default): ``zipf`` > 0 scales a symbol's rates by
  ``rank ** -zipf`` (rank = its place in the universe, 1 first), normalised so that the
  universe's mean stays the configured rate: a market where the top names carry 100x the
  median symbol. ``day_shape`` confines trading to the US session (14:30-21:00 UTC, 9:30-16:00
  New York in winter) with bursts at the open and the close; the session's mean rate is
  the configured one.
* ``sequence_number = second_of_utc_day * SEQ_STRIDE + index_in_second + 1``: shared by the
  trades and quotes of a ticker, increasing within a day, reset at UTC midnight, and never
  repeated inside any 24-hour window (so (symbol, any day, sequence) is a unique key).
* A ticker spelled with ``/`` (``BRK/A``) is the same security as its ``.`` spelling
  (``BRK.A``, the spelling of bucket names, ``schemas.keys``): streaming both gives the same
  events under each name, as one feed quoting a class share two ways would.
* Prices follow a smooth deterministic path (a sum of sines of time on top of a per-symbol
  base price) plus small per-trade noise, rounded to cents (4 decimals below $1).
* Second, minute and hour bars (any multiplier) are the exact aggregation of the model's
  trades. Day, week, month, quarter and year bars come from a coarse closed-form model
  (the price path sampled every 15 minutes, the expected trade count and volume), so a
  multi-year daily request stays cheap; they are NOT the sum of the trades. Weeks start
  on Sunday (UTC); longer bars aggregate the coarse daily bars exactly.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from schemas.keys import symbol_key
from simulator.universe import DEFAULT_TICKERS, TickerInfo, ticker_info

NS = 1_000_000_000
MS = 1_000_000
DAY_S = 86_400
DAY_NS = DAY_S * NS
MINUTE_NS = 60 * NS
SEQ_STRIDE = 100_000  # > the largest number of events (trades + quotes) in one symbol-second
MAX_RATE = SEQ_STRIDE // 2 - 1
DATA_START_S = 946_684_800  # 2000-01-01T00:00:00Z
SESSION_OPEN_S = 14 * 3600 + 30 * 60  # UTC second of the day (day_shape)
SESSION_CLOSE_S = 21 * 3600
# day_shape: extra activity at the open and at the close, decaying over this share of the
# session (0.04 of 6.5 h: about 16 minutes); the factor keeps the session's mean at 1.
OPEN_BURST, CLOSE_BURST, BURST_WIDTH = 3.0, 2.0, 0.04
_SHAPE_MEAN = 1 + (OPEN_BURST + CLOSE_BURST) * BURST_WIDTH

_U64 = np.uint64
_GOLD = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_K_INDEX = _U64(0xD1B54A32D192ED03)
_K_FIELD = 0x632BE59BD9B4E019
_MASK64 = (1 << 64) - 1

# Trade sizes: mostly round lots; FRACTIONAL_SHARE of trades are fractional (0.0001..4.9999).
_LOTS = np.array([1, 5, 10, 20, 25, 50, 100, 100, 100, 100, 100, 200, 200, 300, 400, 500,
                  1000, 2500], dtype=np.int64)
FRACTIONAL_SHARE = 0.03
_MEAN_SIZE = (1 - FRACTIONAL_SHARE) * float(_LOTS.mean()) + FRACTIONAL_SHARE * 2.5
# Exchange ids; 4 is FINRA (off-exchange), whose prints carry a TRF id and timestamp.
_TRADE_EXCHANGES = np.array([1, 2, 3, 4, 4, 4, 4, 7, 8, 10, 11, 12, 12, 15, 17, 19, 21],
                            dtype=np.int64)
_QUOTE_EXCHANGES = np.array([1, 2, 3, 7, 8, 10, 11, 12, 15, 17, 19, 21], dtype=np.int64)
_TRF_IDS = np.array([201, 202, 203], dtype=np.int64)
# Trade condition lists; None = the field is absent (as on the real feed).
TRADE_CONDITIONS: tuple[tuple[int, ...], ...] = (
    (12,), (14,), (37,), (41,), (12, 37), (14, 41), (14, 37, 41), (53,), (12, 41))
QUOTE_CONDITIONS: tuple[int, ...] = (1, 2, 8, 12)
QUOTE_INDICATORS: tuple[tuple[int, ...], ...] = ((604,), (503,), (604, 503))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise on uint64 (wrap-around is intended)."""
    x = x + _GOLD
    x = (x ^ (x >> _U64(30))) * _M1
    x = (x ^ (x >> _U64(27))) * _M2
    return x ^ (x >> _U64(31))


def _uniform(key: np.ndarray, field_no: int) -> np.ndarray:
    """A uniform float in [0, 1) for each key, independent per field number."""
    h = _mix(key ^ _U64((field_no * _K_FIELD) & _MASK64))
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _ints(key: np.ndarray, field_no: int, n: int) -> np.ndarray:
    return (_uniform(key, field_no) * n).astype(np.int64)


@dataclass
class Trades:
    """Columns of the trades of one symbol, in SIP-time order. -1 / 0 mean absent."""

    symbol: str
    sip: np.ndarray  # int64 ns
    participant: np.ndarray  # int64 ns
    price: np.ndarray  # float64
    size_e4: np.ndarray  # int64, shares * 10_000 (fractional shares exact)
    exchange: np.ndarray
    tape: int | None
    conditions: np.ndarray  # index into TRADE_CONDITIONS, -1 absent
    seq: np.ndarray
    trf_id: np.ndarray  # -1 absent
    trf_ts: np.ndarray  # -1 absent
    correction: np.ndarray  # 0 absent

    def __len__(self) -> int:
        return len(self.sip)

    def take(self, idx: np.ndarray | slice) -> Trades:
        return Trades(self.symbol, self.sip[idx], self.participant[idx], self.price[idx],
                      self.size_e4[idx], self.exchange[idx], self.tape,
                      self.conditions[idx], self.seq[idx], self.trf_id[idx],
                      self.trf_ts[idx], self.correction[idx])


@dataclass
class Quotes:
    """Columns of the quotes (NBBO) of one symbol, in SIP-time order. -1 means absent."""

    symbol: str
    sip: np.ndarray
    participant: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    bid_exchange: np.ndarray
    ask_exchange: np.ndarray
    tape: int | None
    condition: np.ndarray  # value from QUOTE_CONDITIONS, -1 absent
    indicators: np.ndarray  # index into QUOTE_INDICATORS, -1 absent
    seq: np.ndarray

    def __len__(self) -> int:
        return len(self.sip)

    def take(self, idx: np.ndarray | slice) -> Quotes:
        return Quotes(self.symbol, self.sip[idx], self.participant[idx], self.bid[idx],
                      self.ask[idx], self.bid_size[idx], self.ask_size[idx],
                      self.bid_exchange[idx], self.ask_exchange[idx], self.tape,
                      self.condition[idx], self.indicators[idx], self.seq[idx])


@dataclass
class Aggregates:
    """Bucketed trade aggregates. ``pv`` = sum(price * size_e4), kept unrounded so that
    coarser buckets can be rebuilt exactly from finer ones."""

    start_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume_e4: np.ndarray
    pv: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.start_ns)

    def take(self, idx: np.ndarray | slice) -> Aggregates:
        return Aggregates(self.start_ns[idx], self.open[idx], self.high[idx], self.low[idx],
                          self.close[idx], self.volume_e4[idx], self.pv[idx], self.count[idx])

    def vwap(self) -> np.ndarray:
        return np.round(self.pv / np.maximum(self.volume_e4, 1), 4)

    @staticmethod
    def empty() -> Aggregates:
        z = np.zeros(0, dtype=np.int64)
        f = np.zeros(0, dtype=np.float64)
        return Aggregates(z, f, f, f, f, z, f, z)

    @staticmethod
    def concat(parts: Sequence[Aggregates]) -> Aggregates:
        if not parts:
            return Aggregates.empty()
        return Aggregates(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                            ("start_ns", "open", "high", "low", "close", "volume_e4", "pv",
                             "count")))


def aggregate_trades(sip: np.ndarray, price: np.ndarray, size_e4: np.ndarray,
                     width_ns: int, origin_ns: int = 0) -> Aggregates:
    """OHLCV of time-ordered trades in buckets of ``width_ns`` aligned to ``origin_ns``."""
    if len(sip) == 0:
        return Aggregates.empty()
    bucket = (sip - origin_ns) // width_ns
    cut = np.flatnonzero(np.diff(bucket)) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(sip)])) - 1
    return Aggregates(
        start_ns=bucket[starts] * width_ns + origin_ns,
        open=price[starts], close=price[ends],
        high=np.maximum.reduceat(price, starts), low=np.minimum.reduceat(price, starts),
        volume_e4=np.add.reduceat(size_e4, starts),
        pv=np.add.reduceat(price * size_e4, starts),
        count=ends - starts + 1,
    )


def regroup(aggs: Aggregates, width_ns: int, origin_ns: int = 0) -> Aggregates:
    """Merge finer buckets into buckets of ``width_ns`` (exact: o/h/l/c/v/n, pv sums)."""
    if len(aggs) == 0:
        return aggs
    bucket = (aggs.start_ns - origin_ns) // width_ns
    cut = np.flatnonzero(np.diff(bucket)) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [len(bucket)])) - 1
    return Aggregates(
        start_ns=bucket[starts] * width_ns + origin_ns,
        open=aggs.open[starts], close=aggs.close[ends],
        high=np.maximum.reduceat(aggs.high, starts), low=np.minimum.reduceat(aggs.low, starts),
        volume_e4=np.add.reduceat(aggs.volume_e4, starts),
        pv=np.add.reduceat(aggs.pv, starts),
        count=np.add.reduceat(aggs.count, starts),
    )


@dataclass(frozen=True)
class MinuteBar:
    """One minute's aggregate plus the day-to-date figures an AM event carries."""

    symbol: str
    start_ns: int
    open: float
    high: float
    low: float
    close: float
    volume_e4: int
    vwap: float
    count: int
    day_volume_e4: int  # accumulated volume today, through this minute
    day_open: float  # the day's first trade price
    day_vwap: float
    otc: bool


class MarketModel:
    """The market: same (seed, rates) -> the same trades, quotes and bars, for any window."""

    def __init__(self, seed: int = 42, trades_per_second: float = 5.0,
                 quotes_per_second: float = 5.0, symbols: Sequence[str] | None = None,
                 cache_days: int = 256, zipf: float = 0.0, day_shape: bool = False) -> None:
        for name, rate in (("trades_per_second", trades_per_second),
                           ("quotes_per_second", quotes_per_second)):
            if not 0 <= rate <= MAX_RATE:
                raise ValueError(f"{name} must be between 0 and {MAX_RATE} per symbol, "
                                 f"got {rate}")
        self.seed = int(seed)
        self.trades_per_second = float(trades_per_second)
        self.quotes_per_second = float(quotes_per_second)
        universe = list(symbols) if symbols else [t.ticker for t in DEFAULT_TICKERS]
        self.symbols: tuple[str, ...] = tuple(dict.fromkeys(universe))
        self._known = frozenset(self.symbols)
        if zipf < 0:
            raise ValueError(f"zipf must be >= 0, got {zipf}")
        self.zipf = float(zipf)
        self.day_shape = bool(day_shape)
        self._weights: dict[str, float] = {}
        # (s0, s1, session seconds, their intensity) of the last window
        self._shape_memo: tuple[int, int, np.ndarray, np.ndarray | float] | None = None
        if self.zipf > 0:
            raw = np.arange(1, len(self.symbols) + 1, dtype=np.float64) ** -self.zipf
            raw /= raw.mean()
            self._weights = {symbol_key(s): float(w) for s, w in zip(self.symbols, raw,
                                                                      strict=True)}
        # the AM of every active symbol needs its day in the cache: one entry per symbol
        cache_days = max(cache_days, 2 * len(self.symbols))
        self._infos: dict[str, TickerInfo] = {}
        self._keys: dict[str, int] = {}
        # (symbol, day) -> (computed through, minute aggregates so far)
        self._day_cache: OrderedDict[tuple[str, int], tuple[int, Aggregates]] = OrderedDict()
        self._cache_days = cache_days
        self._cache_lock = threading.Lock()  # REST and AM compute in worker threads
        self._day_locks: dict[tuple[str, int], threading.Lock] = {}

    # ----------------------------------------------------------------- reference data
    def knows(self, symbol: str) -> bool:
        return symbol in self._known

    def info(self, symbol: str) -> TickerInfo:
        info = self._infos.get(symbol)
        if info is None:
            security = symbol_key(symbol)
            info = ticker_info(security)
            if security != symbol:
                info = replace(info, ticker=symbol)
            self._infos[symbol] = info
        return info

    def _key(self, symbol: str) -> int:
        key = self._keys.get(symbol)
        if key is None:
            digest = hashlib.blake2b(f"{self.seed}\x00{symbol_key(symbol)}".encode(),
                                     digest_size=8)
            key = self._keys[symbol] = int.from_bytes(digest.digest(), "little")
        return key

    # ----------------------------------------------------------------- activity
    def weight(self, symbol: str) -> float:
        """The symbol's share of activity relative to the mean symbol (1.0 without zipf)."""
        return self._weights.get(symbol_key(symbol), 1.0) if self._weights else 1.0

    def peak_factor(self, symbol: str) -> float:
        """The largest multiple of the configured rates this symbol reaches in any second."""
        shape = (1 + OPEN_BURST) / _SHAPE_MEAN if self.day_shape else 1.0
        return self.weight(symbol) * shape

    def intensity(self, secs: np.ndarray) -> np.ndarray | float:
        """The day's shape at each UTC second: 1.0 without ``day_shape``."""
        if not self.day_shape:
            return 1.0
        t = ((secs % DAY_S) - SESSION_OPEN_S) / (SESSION_CLOSE_S - SESSION_OPEN_S)
        inside = (t >= 0) & (t < 1)
        tc = np.clip(t, 0.0, 1.0)
        shape = (1 + OPEN_BURST * np.exp(-tc / BURST_WIDTH)
                 + CLOSE_BURST * np.exp(-(1 - tc) / BURST_WIDTH)) / _SHAPE_MEAN
        return np.where(inside, shape, 0.0)

    def _seconds(self, s0: int, s1: int) -> np.ndarray:
        """The UTC seconds s0..s1 that can hold events (with ``day_shape``: the session's)."""
        secs = np.arange(s0, s1 + 1, dtype=np.int64)
        if not self.day_shape:
            return secs
        # the same window for thousands of symbols in a row (a burst): shape it once
        memo = self._shape_memo
        if memo is not None and memo[0] == s0 and memo[1] == s1:
            return memo[2]
        of_day = secs % DAY_S
        secs = secs[(of_day >= SESSION_OPEN_S) & (of_day < SESSION_CLOSE_S)]
        self._shape_memo = (s0, s1, secs, self.intensity(secs))
        return secs

    def _rates(self, symbol: str, secs: np.ndarray, rate: float) -> np.ndarray | float:
        if not self._weights and not self.day_shape:
            return rate
        memo = self._shape_memo
        shape = memo[3] if memo is not None and memo[2] is secs else self.intensity(secs)
        return np.minimum(rate * self.weight(symbol) * shape, MAX_RATE)

    # ----------------------------------------------------------------- prices
    def mid_price(self, symbol: str, t_ns: np.ndarray) -> np.ndarray:
        """The smooth price path (before per-trade noise and rounding)."""
        key = np.array([self._key(symbol)], dtype=np.uint64)
        phase = [2 * math.pi * float(_uniform(key, 100 + i)[0]) for i in range(5)]
        t = np.asarray(t_ns, dtype=np.float64) / NS
        two_pi = 2 * math.pi
        x = (0.20 * np.sin(two_pi * t / (365.25 * DAY_S) + phase[0])
             + 0.04 * np.sin(two_pi * t / (9.3 * DAY_S) + phase[1])
             + 0.008 * np.sin(two_pi * t / (3.7 * 3600) + phase[2])
             + 0.002 * np.sin(two_pi * t / (17 * 60) + phase[3])
             + 0.0007 * np.sin(two_pi * t / 47 + phase[4]))
        return self.info(symbol).base_price * np.exp(x)

    def _round_price(self, symbol: str, price: np.ndarray) -> np.ndarray:
        decimals = 2 if self.info(symbol).base_price >= 1 else 4
        tick = 10.0 ** -decimals
        return np.maximum(np.round(price, decimals), tick)

    # ----------------------------------------------------------------- events
    def _events(self, symbol: str, start_ns: int, end_ns: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(event key, sip ns, sequence number, is_trade) of every event in the window."""
        s0 = max(start_ns // NS, DATA_START_S)
        s1 = (end_ns - 1) // NS
        if s1 < s0 or (self.trades_per_second == 0 and self.quotes_per_second == 0):
            z = np.zeros(0, dtype=np.int64)
            return z.astype(np.uint64), z, z, z.astype(bool)
        secs = self._seconds(s0, s1)
        skey = _mix(_U64(self._key(symbol)) ^ (secs.astype(np.uint64) * _GOLD))
        nt = self._count(skey, 1, self._rates(symbol, secs, self.trades_per_second))
        nq = self._count(skey, 2, self._rates(symbol, secs, self.quotes_per_second))
        n = nt + nq
        total = int(n.sum())
        slot = np.repeat(np.arange(len(secs)), n)
        first = np.cumsum(n) - n
        k = np.arange(total, dtype=np.int64) - first[slot]
        n_ev = n[slot]
        nt_ev = nt[slot]
        # Trades spread evenly among the slot's events (Bresenham), the rest are quotes.
        is_trade = ((k + 1) * nt_ev // n_ev) > (k * nt_ev // n_ev)
        ekey = _mix(skey[slot] + k.astype(np.uint64) * _K_INDEX)
        offset = np.minimum(((k + _uniform(ekey, 3)) / n_ev * NS).astype(np.int64), NS - 1)
        sec = secs[slot]
        sip = sec * NS + offset
        seq = (sec % DAY_S) * SEQ_STRIDE + k + 1
        keep = (sip >= start_ns) & (sip < end_ns)
        if not keep.all():
            return ekey[keep], sip[keep], seq[keep], is_trade[keep]
        return ekey, sip, seq, is_trade

    def _trade_events(self, symbol: str, start_ns: int, end_ns: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(event key, sip ns) of the trades in the window only: the same values as
        ``_events`` restricted to trades, without generating the quotes between them
        (minute aggregates need only trades; at equal rates this halves the work)."""
        s0 = max(start_ns // NS, DATA_START_S)
        s1 = (end_ns - 1) // NS
        if s1 < s0 or self.trades_per_second == 0:
            z = np.zeros(0, dtype=np.int64)
            return z.astype(np.uint64), z
        secs = self._seconds(s0, s1)
        skey = _mix(_U64(self._key(symbol)) ^ (secs.astype(np.uint64) * _GOLD))
        nt = self._count(skey, 1, self._rates(symbol, secs, self.trades_per_second))
        n = nt + self._count(skey, 2, self._rates(symbol, secs, self.quotes_per_second))
        slot = np.repeat(np.arange(len(secs)), nt)
        j = np.arange(int(nt.sum()), dtype=np.int64) - (np.cumsum(nt) - nt)[slot]
        n_ev = n[slot]
        nt_ev = nt[slot]
        # Trade j of a slot is the event k where the Bresenham spread in _events first
        # reaches j + 1 trades: the smallest k with (k + 1) * nt >= (j + 1) * n.
        k = -(-(j + 1) * n_ev // nt_ev) - 1
        ekey = _mix(skey[slot] + k.astype(np.uint64) * _K_INDEX)
        offset = np.minimum(((k + _uniform(ekey, 3)) / n_ev * NS).astype(np.int64), NS - 1)
        sip = secs[slot] * NS + offset
        keep = (sip >= start_ns) & (sip < end_ns)
        if not keep.all():
            return ekey[keep], sip[keep]
        return ekey, sip

    @staticmethod
    def _count(skey: np.ndarray, field_no: int, rate: np.ndarray | float) -> np.ndarray:
        if isinstance(rate, np.ndarray):
            whole_a = np.floor(rate)
            return (whole_a.astype(np.int64)
                    + (_uniform(skey, field_no) < rate - whole_a).astype(np.int64))
        whole = int(rate)
        frac = rate - whole
        if frac == 0:
            return np.full(len(skey), whole, dtype=np.int64)
        return whole + (_uniform(skey, field_no) < frac).astype(np.int64)

    def _trade_prices(self, symbol: str, ekey: np.ndarray, sip: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        noise = 0.0003 * (2 * _uniform(ekey, 10) - 1)
        price = self._round_price(symbol, self.mid_price(symbol, sip) * (1 + noise))
        fractional = _uniform(ekey, 11) < FRACTIONAL_SHARE
        lots = _LOTS[_ints(ekey, 12, len(_LOTS))] * 10_000
        frac_e4 = 1 + _ints(ekey, 13, 49_999)
        return price, np.where(fractional, frac_e4, lots)

    def trades(self, symbol: str, start_ns: int, end_ns: int) -> Trades:
        """Every trade of ``symbol`` with ``start_ns <= sip_timestamp < end_ns``."""
        ekey, sip, seq, is_trade = self._events(symbol, start_ns, end_ns)
        return self._trades(symbol, ekey[is_trade], sip[is_trade], seq[is_trade])

    def quotes(self, symbol: str, start_ns: int, end_ns: int) -> Quotes:
        """Every quote of ``symbol`` with ``start_ns <= sip_timestamp < end_ns``."""
        ekey, sip, seq, is_trade = self._events(symbol, start_ns, end_ns)
        q = ~is_trade
        return self._quotes(symbol, ekey[q], sip[q], seq[q])

    def trades_and_quotes(self, symbol: str, start_ns: int, end_ns: int
                          ) -> tuple[Trades, Quotes]:
        """Both at the cost of one pass over the window's slots."""
        ekey, sip, seq, is_trade = self._events(symbol, start_ns, end_ns)
        q = ~is_trade
        return (self._trades(symbol, ekey[is_trade], sip[is_trade], seq[is_trade]),
                self._quotes(symbol, ekey[q], sip[q], seq[q]))

    def _trades(self, symbol: str, ekey: np.ndarray, sip: np.ndarray, seq: np.ndarray
                ) -> Trades:
        price, size_e4 = self._trade_prices(symbol, ekey, sip)
        exchange = _TRADE_EXCHANGES[_ints(ekey, 14, len(_TRADE_EXCHANGES))]
        trf = exchange == 4
        cond = _ints(ekey, 16, len(TRADE_CONDITIONS))
        cond = np.where(_uniform(ekey, 15) < 0.35, -1, cond)
        trf_id = np.where(trf, _TRF_IDS[_ints(ekey, 17, len(_TRF_IDS))], -1)
        trf_ts = np.where(trf, sip - 1000 - _ints(ekey, 18, 5_000_000), -1)
        participant = np.where(trf, trf_ts, sip) - 100 - _ints(ekey, 19, 900_000)
        correction = (_uniform(ekey, 20) < 0.003).astype(np.int64)
        return Trades(symbol, sip, participant, price, size_e4, exchange, self.info(symbol).tape,
                      cond, seq, trf_id, trf_ts, correction)

    def _quotes(self, symbol: str, ekey: np.ndarray, sip: np.ndarray, seq: np.ndarray
                ) -> Quotes:
        decimals = 2 if self.info(symbol).base_price >= 1 else 4
        tick = 10.0 ** -decimals
        mid_ticks = np.floor(self.mid_price(symbol, sip) / tick)
        spread = 1 + _ints(ekey, 30, 4)
        bid_ticks = np.maximum(mid_ticks - spread // 2, 1)
        bid = np.round(bid_ticks * tick, decimals)
        ask = np.round((bid_ticks + spread) * tick, decimals)
        bid_size = 100 * (1 + _ints(ekey, 31, 20))
        ask_size = 100 * (1 + _ints(ekey, 32, 20))
        bx = _QUOTE_EXCHANGES[_ints(ekey, 33, len(_QUOTE_EXCHANGES))]
        ax = _QUOTE_EXCHANGES[_ints(ekey, 34, len(_QUOTE_EXCHANGES))]
        cond_values = np.array(QUOTE_CONDITIONS, dtype=np.int64)
        condition = np.where(_uniform(ekey, 35) < 0.9, -1,
                             cond_values[_ints(ekey, 36, len(cond_values))])
        indicators = np.where(_uniform(ekey, 37) < 0.97, -1,
                              _ints(ekey, 38, len(QUOTE_INDICATORS)))
        participant = sip - 100 - _ints(ekey, 39, 900_000)
        return Quotes(symbol, sip, participant, bid, ask, bid_size, ask_size, bx, ax,
                      self.info(symbol).tape, condition, indicators, seq)

    # ----------------------------------------------------------------- aggregates
    def day_minutes(self, symbol: str, day_start_ns: int,
                    until_ns: int | None = None) -> Aggregates:
        """Exact minute aggregates of a UTC day, at least through ``until_ns`` (default: the
        whole day). Cached per (symbol, day) and extended on demand, computed in chunks of
        about a million trades so that memory stays flat at any trade rate."""
        day_end = day_start_ns + DAY_NS
        end = day_end if until_ns is None else min(day_end, -(-until_ns // MINUTE_NS)
                                                   * MINUTE_NS)
        key = (symbol, day_start_ns)
        with self._cache_lock:
            done, aggs = self._day_cache.get(key, (day_start_ns, Aggregates.empty()))
            if key in self._day_cache:
                self._day_cache.move_to_end(key)
            if done >= end:
                return aggs
            day_lock = self._day_locks.setdefault(key, threading.Lock())
        # One computation per (symbol, day) at a time: an AM minute, a REST day request and
        # the live minute boundary asking at once would otherwise each redo the whole day.
        with day_lock:
            return self._extend_day(key, end)

    def _extend_day(self, key: tuple[str, int], end: int) -> Aggregates:
        symbol, day_start_ns = key
        with self._cache_lock:
            done, aggs = self._day_cache.get(key, (day_start_ns, Aggregates.empty()))
        if done >= end:
            return aggs
        rate = max((self.trades_per_second + self.quotes_per_second)
                   * self.peak_factor(symbol), 1.0)
        chunk = max(1, int(1_000_000 / rate / 60)) * MINUTE_NS
        parts = [aggs]
        start = done
        while start < end:
            stop = min(start + chunk, end)
            ekey, sip = self._trade_events(symbol, start, stop)
            price, size_e4 = self._trade_prices(symbol, ekey, sip)
            parts.append(aggregate_trades(sip, price, size_e4, MINUTE_NS))
            start = stop
        aggs = Aggregates.concat(parts)
        with self._cache_lock:
            self._day_cache[key] = (end, aggs)
            self._day_cache.move_to_end(key)
            if len(self._day_cache) > self._cache_days:
                old, _ = self._day_cache.popitem(last=False)
                self._day_locks.pop(old, None)
        return aggs

    def prime_day(self, symbol: str, start_ns: int, end_ns: int, trades: Trades) -> None:
        """Extend the day cache with ``trades`` = ``self.trades(symbol, start_ns, end_ns)``
        that a caller already has (a burst): the same minute aggregates ``day_minutes``
        would compute, without generating the trades twice. Only whole minutes of one day
        that continue the cache are taken; anything else is left to ``day_minutes``."""
        day_start = start_ns - start_ns % DAY_NS
        if start_ns % MINUTE_NS or end_ns % MINUTE_NS or end_ns > day_start + DAY_NS:
            return
        key = (symbol, day_start)
        self.day_minutes(symbol, day_start, start_ns)  # the day up to the window
        with self._cache_lock:
            done, aggs = self._day_cache.get(key, (day_start, Aggregates.empty()))
            if done != start_ns:
                return
            window = aggregate_trades(trades.sip, trades.price, trades.size_e4, MINUTE_NS)
            self._day_cache[key] = (end_ns, Aggregates.concat([aggs, window]))
            self._day_cache.move_to_end(key)

    def minute_bar(self, symbol: str, minute_start_ns: int) -> MinuteBar | None:
        """The AM event content of one minute (None when the minute had no trade)."""
        minute_start_ns -= minute_start_ns % MINUTE_NS
        day_start = minute_start_ns - minute_start_ns % DAY_NS
        day = self.day_minutes(symbol, day_start, minute_start_ns + MINUTE_NS)
        i = int(np.searchsorted(day.start_ns, minute_start_ns))
        if i >= len(day) or int(day.start_ns[i]) != minute_start_ns:
            return None
        vol = int(day.volume_e4[i])
        cum_v = int(day.volume_e4[: i + 1].sum())
        cum_pv = float(np.add.reduce(day.pv[: i + 1]))
        return MinuteBar(
            symbol=symbol, start_ns=minute_start_ns,
            open=float(day.open[i]), high=float(day.high[i]), low=float(day.low[i]),
            close=float(day.close[i]), volume_e4=vol,
            vwap=round(float(day.pv[i]) / vol, 4), count=int(day.count[i]),
            day_volume_e4=cum_v, day_open=float(day.open[0]),
            day_vwap=round(cum_pv / cum_v, 4), otc=self.info(symbol).otc)

    def intraday_bars(self, symbol: str, width_ns: int, start_ns: int, end_ns: int,
                      descending: bool = False, max_bars: int | None = None) -> Aggregates:
        """Exact bars of width ``width_ns`` (seconds multiple) with start in [start, end).

        Bars are aligned to the Unix epoch. Walks day by day (in ``descending`` order when
        asked) and stops once ``max_bars`` bars are found, so paging stays cheap.
        """
        start_ns = max(start_ns - start_ns % width_ns, DATA_START_S * NS)
        if end_ns <= start_ns:
            return Aggregates.empty()
        # Work in chunks that hold whole bars: whole days (or a multiple) for minute
        # multiples, about an hour of trades for second bars.
        if width_ns % MINUTE_NS == 0:
            span = width_ns * DAY_NS // math.gcd(width_ns, DAY_NS)
        else:
            span = width_ns * max(1, 3600 * NS // width_ns)
        parts: list[Aggregates] = []
        found = 0
        first = start_ns - start_ns % span
        last = (end_ns - 1) - (end_ns - 1) % span
        chunk = last if descending else first
        while first <= chunk <= last:
            c0, c1 = chunk, chunk + span
            if width_ns % MINUTE_NS == 0:
                days = [self.day_minutes(symbol, d, min(d + DAY_NS, end_ns)) for d in
                        range(c0 - c0 % DAY_NS, min(c1, end_ns), DAY_NS)]
                mins = Aggregates.concat(days)
                sel = (mins.start_ns >= c0) & (mins.start_ns < c1)
                aggs = regroup(mins.take(sel), width_ns)
            else:
                t = self.trades(symbol, c0, c1)
                aggs = aggregate_trades(t.sip, t.price, t.size_e4, width_ns)
            sel = (aggs.start_ns >= start_ns) & (aggs.start_ns < end_ns)
            aggs = aggs.take(sel)
            if len(aggs):
                parts.append(aggs)
                found += len(aggs)
            if max_bars is not None and found >= max_bars:
                break
            chunk += -span if descending else span
        if descending:
            parts.reverse()
        out = Aggregates.concat(parts)
        if max_bars is not None and len(out) > max_bars:
            out = out.take(slice(len(out) - max_bars, None) if descending
                           else slice(0, max_bars))
        return out

    def coarse_day_bars(self, symbol: str, first_day_ns: int, last_day_ns: int,
                        now_ns: int) -> Aggregates:
        """Closed-form daily bars for UTC days first..last (see the module doc)."""
        # (np.arange with a ns step computes its length in floating point: off by one)
        days = first_day_ns + DAY_NS * np.arange((last_day_ns - first_day_ns) // DAY_NS + 1,
                                                 dtype=np.int64)
        days = days[(days >= DATA_START_S * NS) & (days <= now_ns)]
        if len(days) == 0 or self.trades_per_second == 0:
            return Aggregates.empty()
        step = 15 * MINUTE_NS
        grid = np.arange(0, DAY_NS + 1, step, dtype=np.int64)
        grid[-1] = DAY_NS - NS
        times = days[:, None] + grid[None, :]
        elapsed = np.clip((now_ns - days) / DAY_NS, 0.0, 1.0)
        valid = times <= np.maximum(now_ns, days)[:, None]
        mids = self.mid_price(symbol, times)
        rnd = lambda a: self._round_price(symbol, a)  # noqa: E731
        last_idx = valid.sum(axis=1) - 1
        rows = np.arange(len(days))
        high = np.where(valid, mids, -np.inf).max(axis=1) * 1.0003
        low = np.where(valid, mids, np.inf).min(axis=1) * 0.9997
        mean = np.where(valid, mids, 0).sum(axis=1) / valid.sum(axis=1)
        count = np.round(self.trades_per_second * DAY_S * elapsed).astype(np.int64)
        volume_e4 = np.round(count * _MEAN_SIZE).astype(np.int64) * 10_000
        keep = count > 0
        aggs = Aggregates(days, rnd(mids[:, 0]), rnd(high), rnd(low), rnd(mids[rows, last_idx]),
                          volume_e4, np.round(mean, 4) * volume_e4, count)
        return aggs.take(keep)

    def bars(self, symbol: str, multiplier: int, timespan: str, start_ns: int, end_ns: int,
             now_ns: int, descending: bool = False, max_bars: int | None = None
             ) -> Aggregates:
        """Bars whose start lies in [start_ns, end_ns) and not after ``now_ns``."""
        end_ns = min(end_ns, now_ns + 1)
        if timespan in ("second", "minute", "hour"):
            unit = {"second": NS, "minute": MINUTE_NS, "hour": 3600 * NS}[timespan]
            return self.intraday_bars(symbol, unit * multiplier, start_ns, end_ns,
                                      descending, max_bars)
        if timespan not in ("day", "week", "month", "quarter", "year"):
            raise ValueError(f"unknown timespan {timespan!r}")
        first_bucket = _calendar_floor(start_ns, timespan)
        starts = _calendar_starts(first_bucket, end_ns, timespan, multiplier)
        if not starts:
            return Aggregates.empty()
        bucket_end = _calendar_add(starts[-1], timespan, multiplier)
        day_bars = self.coarse_day_bars(symbol, starts[0], bucket_end - DAY_NS, now_ns)
        if len(day_bars) == 0:
            return day_bars
        edges = np.array([*starts, bucket_end], dtype=np.int64)
        bucket = np.searchsorted(edges, day_bars.start_ns, side="right") - 1
        cut = np.flatnonzero(np.diff(bucket)) + 1
        s = np.concatenate(([0], cut))
        e = np.concatenate((cut, [len(bucket)])) - 1
        out = Aggregates(
            edges[bucket[s]], day_bars.open[s], np.maximum.reduceat(day_bars.high, s),
            np.minimum.reduceat(day_bars.low, s), day_bars.close[e],
            np.add.reduceat(day_bars.volume_e4, s), np.add.reduceat(day_bars.pv, s),
            np.add.reduceat(day_bars.count, s))
        if max_bars is not None and len(out) > max_bars:
            out = out.take(slice(len(out) - max_bars, None) if descending
                           else slice(0, max_bars))
        return out


def _to_datetime(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // NS, tz=dt.UTC)


def _from_datetime(d: dt.datetime) -> int:
    return calendar.timegm(d.timetuple()) * NS


def _calendar_floor(ns: int, timespan: str) -> int:
    d = _to_datetime(ns).replace(hour=0, minute=0, second=0, microsecond=0)
    if timespan == "week":  # weeks start on Sunday
        d -= dt.timedelta(days=(d.weekday() + 1) % 7)
    elif timespan == "month":
        d = d.replace(day=1)
    elif timespan == "quarter":
        d = d.replace(day=1, month=(d.month - 1) // 3 * 3 + 1)
    elif timespan == "year":
        d = d.replace(day=1, month=1)
    return _from_datetime(d)


def _calendar_add(ns: int, timespan: str, n: int) -> int:
    d = _to_datetime(ns)
    if timespan == "day":
        return ns + n * DAY_NS
    if timespan == "week":
        return ns + 7 * n * DAY_NS
    months = n * {"month": 1, "quarter": 3, "year": 12}[timespan]
    total = d.year * 12 + (d.month - 1) + months
    return _from_datetime(d.replace(year=total // 12, month=total % 12 + 1))


def _calendar_starts(first: int, end_ns: int, timespan: str, multiplier: int) -> list[int]:
    starts = []
    t = first
    while t < end_ns:
        starts.append(t)
        t = _calendar_add(t, timespan, multiplier)
    return starts
