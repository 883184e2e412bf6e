"""Sample and random records shared by the schemas tests, and the evolved trade schema
(v2) they write with."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from schemas.codec import load_schema

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

TRADE_V2 = json.loads((Path(__file__).resolve().parents[1] / "data" / "schemas" / "trade_v2.avsc")
                      .read_text())


def sample(kind: str) -> dict[str, Any]:
    if kind == "trade":
        return {"symbol": "AAPL", "sip_timestamp_ns": 1651684192462000000,
                "participant_timestamp_ns": None, "trf_timestamp_ns": None,
                "price": 161.87, "size": 300.0, "exchange": 10, "tape": 3,
                "conditions": [14, 41], "id": "5096", "sequence_number": 4009402,
                "trf_id": None, "correction": None, "source": "live",
                "received_ns": 1651684192462001234}
    if kind == "quote":
        return {"symbol": "MSFT", "sip_timestamp_ns": 1651684192462000000,
                "participant_timestamp_ns": 1651684192461000000, "trf_timestamp_ns": None,
                "bid_price": 280.1, "bid_size": 100.0, "bid_exchange": 11,
                "ask_price": 280.12, "ask_size": 200.0, "ask_exchange": 12,
                "conditions": [1], "indicators": [], "sequence_number": 77, "tape": 3,
                "source": "backfill", "received_ns": None}
    if kind == "bar":
        return {"symbol": "BRK.A", "timeframe": "1Min", "start_ns": 1651684140000000000,
                "end_ns": 1651684200000000000, "open": 1.5, "high": 2.5, "low": 1.25,
                "close": 2.0, "volume": 1234.5, "vwap": 1.9, "trades": None,
                "accumulated_volume": 99999.0, "official_open": 1.4, "day_vwap": 1.8,
                "average_trade_size": 12.5, "otc": False, "source": "live",
                "received_ns": 1651684200000000001}
    raise ValueError(kind)


def _random_long(rng: random.Random) -> int:
    choice = rng.random()
    if choice < 0.15:
        return rng.choice([0, 1, -1, 63, 64, -64, -65, 127, 128, 8191, 8192, -8192, -8193,
                           LONG_MIN, LONG_MAX, 2**62, -(2**62)])
    if choice < 0.5:
        return rng.randint(1_500_000_000_000_000_000, 1_900_000_000_000_000_000)
    bits = rng.randint(1, 63)
    return rng.randint(-(2**bits), 2**bits - 1)


def _random_int(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.2:
        return rng.choice([0, 1, -1, 63, 64, -64, -65, 8191, -8192, 8192, -8193, INT_MIN,
                           INT_MAX])
    if roll < 0.98:  # ids, codes: small like the real data
        return rng.randint(-8192, 8191)
    bits = rng.randint(1, 31)
    return rng.randint(-(2**bits), 2**bits - 1)


def _random_double(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.1:
        return rng.choice([0.0, -0.0, 1e308, -1e-308, float("inf"), float("-inf"), 5e-324])
    if choice < 0.6:
        return round(rng.uniform(0, 5000), 4)
    return rng.uniform(-1e12, 1e12)


_ALPHABET = "ABCXYZ.abc-/ é€😀\x00"


def _random_string(rng: random.Random) -> str:
    n = rng.choice([0, 1, 4, 5, rng.randint(0, 200)])
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def random_value(rng: random.Random, schema: Any) -> Any:
    if isinstance(schema, list):
        branch = rng.choice(schema)
        return random_value(rng, branch)
    if isinstance(schema, dict):
        t = schema["type"]
        if t == "array":
            return [random_value(rng, schema["items"])
                    for _ in range(rng.choice([0, 0, 1, 2, rng.randint(0, 70)]))]
        if t == "enum":
            return rng.choice(schema["symbols"])
        if t == "map":
            return {_random_string(rng): random_value(rng, schema["values"])
                    for _ in range(rng.randint(0, 3))}
        return random_value(rng, t)
    return {"null": lambda: None, "long": lambda: _random_long(rng),
            "int": lambda: _random_int(rng), "double": lambda: _random_double(rng),
            "float": lambda: float(rng.randint(-1000, 1000)) / 4,
            "string": lambda: _random_string(rng), "boolean": lambda: rng.random() < 0.5,
            "bytes": lambda: rng.randbytes(rng.randint(0, 10))}[schema]()


def random_record(rng: random.Random, kind_or_schema: str | dict[str, Any]) -> dict[str, Any]:
    schema = load_schema(kind_or_schema) if isinstance(kind_or_schema, str) else kind_or_schema
    return {f["name"]: random_value(rng, f["type"]) for f in schema["fields"]}
