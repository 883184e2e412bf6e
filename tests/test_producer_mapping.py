"""Unit tests of producer.mapping with recorded frames (no network)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from producer.mapping import MappingError, event_timestamp_ns, record_from_ws_event

DATA = Path(__file__).parent / "data" / "producer"
SCHEMAS = Path(__file__).parent.parent / "schemas"


def _events(name: str) -> list[dict]:
    out = []
    for line in (DATA / name).read_text().splitlines():
        out.extend(e for e in json.loads(line) if e.get("ev") != "status")
    return out


def _field_names(kind: str) -> set[str]:
    return {f["name"] for f in json.loads((SCHEMAS / f"{kind}.avsc").read_text())["fields"]}


def test_every_recorded_event_maps_to_exactly_the_schema_fields() -> None:
    events = _events("good_frames.jsonl")
    assert len(events) == 9
    for ev in events:
        kind, record = record_from_ws_event(ev, 123)
        assert set(record) == _field_names(kind)
        assert record["source"] == "live"
        assert record["received_ns"] == 123


def test_trade_fields() -> None:
    ev = {"ev": "T", "sym": "AAPL", "i": "5096", "x": 10, "p": 161.87, "s": 300,
          "c": [14, 41], "t": 1651684192462, "q": 4009402, "z": 3}
    kind, r = record_from_ws_event(ev, 7)
    assert kind == "trade"
    assert r == {
        "symbol": "AAPL", "sip_timestamp_ns": 1651684192462_000_000,
        "participant_timestamp_ns": None, "trf_timestamp_ns": None, "price": 161.87,
        "size": 300.0, "exchange": 10, "tape": 3, "conditions": [14, 41], "id": "5096",
        "sequence_number": 4009402, "trf_id": None, "correction": None, "source": "live",
        "received_ns": 7}
    assert type(r["size"]) is float
    assert event_timestamp_ns(kind, r) == 1651684192462_000_000


def test_trade_decimal_size_wins_and_trf_fields_scaled() -> None:
    ev = {"ev": "T", "sym": "MSFT", "i": "12", "x": 4, "p": 280.5, "s": 0, "ds": "0.25",
          "t": 1651684192800, "q": 17, "trfi": 202, "trft": 1651684192700}
    _, r = record_from_ws_event(ev, 1)
    assert r["size"] == 0.25
    assert r["trf_id"] == 202
    assert r["trf_timestamp_ns"] == 1651684192700_000_000
    assert r["conditions"] == []
    assert r["tape"] is None


def test_quote_single_condition_becomes_list_and_indicators() -> None:
    ev = {"ev": "Q", "sym": "MSFT", "bx": 4, "bp": 114.125, "bs": 100, "ax": 7,
          "ap": 114.128, "as": 160, "c": 0, "i": [604], "t": 1536036818784,
          "q": 50385480, "z": 3}
    kind, r = record_from_ws_event(ev, None)
    assert kind == "quote"
    assert r["conditions"] == [0]
    assert r["indicators"] == [604]
    assert r["bid_size"] == 100.0 and type(r["bid_size"]) is float
    assert r["ask_exchange"] == 7
    assert r["sip_timestamp_ns"] == 1536036818784_000_000
    assert r["received_ns"] is None
    ev2 = {k: v for k, v in ev.items() if k not in ("c", "i")}
    _, r2 = record_from_ws_event(ev2, None)
    assert r2["conditions"] == [] and r2["indicators"] == []


def test_bar_fields() -> None:
    ev = {"ev": "AM", "sym": "GTE", "v": 4110, "av": 9470157, "op": 0.4372, "vw": 0.4488,
          "o": 0.4488, "c": 0.4486, "h": 0.4489, "l": 0.4486, "a": 0.4352, "z": 685,
          "s": 1610144640000, "e": 1610144700000}
    kind, r = record_from_ws_event(ev, 5)
    assert kind == "bar"
    assert r == {
        "symbol": "GTE", "timeframe": "1Min", "start_ns": 1610144640000_000_000,
        "end_ns": 1610144700000_000_000, "open": 0.4488, "high": 0.4489, "low": 0.4486,
        "close": 0.4486, "volume": 4110.0, "vwap": 0.4488, "trades": None,
        "accumulated_volume": 9470157.0, "official_open": 0.4372, "day_vwap": 0.4352,
        "average_trade_size": 685.0, "otc": False, "source": "live", "received_ns": 5}
    assert event_timestamp_ns(kind, r) == 1610144700000_000_000


def test_bar_decimal_volumes_and_otc() -> None:
    ev = {"ev": "AM", "sym": "OTCX", "v": 10, "dv": "10.5", "av": 100, "dav": "100.75",
          "o": 1, "c": 1.2, "h": 1.3, "l": 0.9, "s": 1610144640000, "e": 1610144700000,
          "otc": True}
    _, r = record_from_ws_event(ev, 5)
    assert r["volume"] == 10.5
    assert r["accumulated_volume"] == 100.75
    assert r["otc"] is True
    assert r["open"] == 1.0 and type(r["open"]) is float
    assert r["vwap"] is None and r["day_vwap"] is None


GOOD_T = {"ev": "T", "sym": "AAPL", "i": "1", "x": 10, "p": 1.5, "s": 3, "t": 1, "q": 1}


@pytest.mark.parametrize(("change", "message"), [
    ({"ev": "XX"}, "unknown event type"),
    ({"ev": ["T"]}, "string 'ev'"),
    ({"p": "1.5"}, "'p' must be a number"),
    ({"t": 1.5}, "'t' must be an integer"),
    ({"t": True}, "'t' must be an integer"),
    ({"x": None}, "'x' must be an integer"),
    ({"sym": ""}, "'sym' must be a non-empty string"),
    ({"c": ["a"]}, "'c' must be a list of integers"),
    ({"c": 5}, "'c' must be a list of integers"),
    ({"ds": "lots"}, "'ds' must be a decimal string"),
    ({"ds": "nan"}, "'ds' must be a finite decimal string"),
    ({"i": 5}, "'i' must be a non-empty string"),
])
def test_ill_typed_fields_raise_clear_errors(change: dict, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        record_from_ws_event({**GOOD_T, **change}, 1)


@pytest.mark.parametrize("field", ["sym", "i", "x", "p", "s", "t", "q"])
def test_missing_required_trade_field(field: str) -> None:
    ev = {k: v for k, v in GOOD_T.items() if k != field}
    with pytest.raises(MappingError, match=f"missing field '{field}'"):
        record_from_ws_event(ev, 1)


@pytest.mark.parametrize("field", ["sym", "t", "q"])
def test_missing_required_quote_field(field: str) -> None:
    ev = {"ev": "Q", "sym": "A", "bp": 1.0, "bs": 1, "ap": 1.1, "as": 2, "t": 1, "q": 1}
    record_from_ws_event(ev, 1)
    with pytest.raises(MappingError, match=f"missing field '{field}'"):
        record_from_ws_event({k: v for k, v in ev.items() if k != field}, 1)


@pytest.mark.parametrize(("absent", "bid", "ask"), [
    (("bp", "bs"), (None, 0.0), (1.1, 2.0)),
    (("bp",), (None, 5.0), (1.1, 2.0)),
    (("ap", "as"), (1.0, 5.0), (None, 0.0)),
    (("bp", "bs", "ap", "as"), (None, 0.0), (None, 0.0)),
])
def test_a_one_sided_quote_has_a_nan_price_not_zero(absent: tuple[str, ...],
                                                    bid: tuple, ask: tuple) -> None:
    ev = {"ev": "Q", "sym": "A", "bp": 1.0, "bs": 5, "ap": 1.1, "as": 2, "t": 1, "q": 1}
    for variant in ({k: v for k, v in ev.items() if k not in absent},
                    {**ev, **dict.fromkeys(absent)}):  # absent or explicitly null
        _, q = record_from_ws_event(variant, 1)
        for (price, size), (want_price, want_size) in (
                ((q["bid_price"], q["bid_size"]), bid), ((q["ask_price"], q["ask_size"]), ask)):
            assert math.isnan(price) if want_price is None else price == want_price
            assert size == want_size
    with pytest.raises(MappingError, match="field 'bp' must be a number"):
        record_from_ws_event({**ev, "bp": "1.0"}, 1)


@pytest.mark.parametrize("field", ["sym", "o", "h", "l", "c", "v", "s", "e"])
def test_missing_required_bar_field(field: str) -> None:
    ev = {"ev": "AM", "sym": "A", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "s": 1, "e": 2}
    record_from_ws_event(ev, 1)
    with pytest.raises(MappingError, match=f"missing field '{field}'"):
        record_from_ws_event({k: v for k, v in ev.items() if k != field}, 1)


def test_not_an_object_and_no_ev() -> None:
    with pytest.raises(MappingError, match="JSON object"):
        record_from_ws_event([1, 2], 1)  # type: ignore[arg-type]
    with pytest.raises(MappingError, match="without 'ev'"):
        record_from_ws_event({"sym": "A"}, 1)


def test_error_message_truncates_long_values() -> None:
    with pytest.raises(MappingError) as info:
        record_from_ws_event({**GOOD_T, "p": "9" * 500}, 1)
    assert len(str(info.value)) < 150


def test_simulator_events_map_to_records_of_the_exact_schema_types() -> None:
    """The mapping compiled from the spec gives exact Python types (float for every double,
    even when the wire sends an int) on a few thousand simulator events and odd variants."""
    import fastavro.validation

    from schemas.codec import load_schema
    from simulator import wire
    from simulator.model import MarketModel

    model = MarketModel(seed=3, trades_per_second=2000, quotes_per_second=2000,
                        symbols=["AAPL", "BRK.A"])
    start = 1704205800 * 10**9
    events = []
    for sym in ("AAPL", "BRK.A"):
        events += wire.ws_trades(model.trades(sym, start, start + 2 * 10**9))
        events += wire.ws_quotes(model.quotes(sym, start, start + 2 * 10**9))
    assert len(events) > 10_000
    assert any("trfi" in e for e in events) and any("ds" in e for e in events)
    variants = [{**events[0], "p": 161}, {**events[0], "c": None, "z": None},
                {k: v for k, v in events[-1].items() if k not in ("c", "i", "bx")}]
    schemas = {k: load_schema(k) for k in ("trade", "quote")}
    python_type = {"double": float, "long": int, "int": int, "string": str}
    for ev in events + variants:
        kind, record = record_from_ws_event(ev, 9)
        assert fastavro.validation.validate(record, schemas[kind])
        for field in schemas[kind]["fields"]:
            want = python_type.get(field["type"]) if isinstance(field["type"], str) else None
            if want is not None:
                assert type(record[field["name"]]) is want, (field["name"], ev)
