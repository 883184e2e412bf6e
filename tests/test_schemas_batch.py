"""Columnar batch decoding equals per-record decoding, row for row (pure, no Kafka)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from schemas.batch import BatchResult, ListColumn
from schemas.codec import KINDS, Codec, DecodeError, load_schema, make_codec
from schemas.registry import Registry
from tests.support.batchrows import row
from tests.support.registry import registry_config, unique_prefix
from tests.support.samples import TRADE_V2, random_record, sample


@pytest.fixture(autouse=True, params=["native", "numpy"])
def decoder_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on the compiled decoder (schemas/_native.c) and on the numpy
    fallback: both must equal the per-record codec."""
    import schemas.batch as batch

    if request.param == "native":
        if batch._native is None:
            pytest.skip("the C extension schemas._native was not built")
    else:
        monkeypatch.setattr(batch, "_native", None)
    return str(request.param)


def test_the_native_decoder_is_used_when_built(decoder_path: str) -> None:
    decoders = Codec().column_decoders()
    assert {k: d.native for k, d in decoders.items()} == \
        dict.fromkeys(decoders, decoder_path == "native")


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """NaN (from corrupted doubles) compared as equal to itself."""
    return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v
            for k, v in record.items()}


def check_against_codec(codec: Codec, messages: list[bytes]) -> BatchResult:
    result = codec.decode_batch(messages)
    seen: list[int] = []
    for kind, index in result.rows.items():
        for j, i in enumerate(index.tolist()):
            expected_kind, expected = codec.decode(messages[i])
            assert (kind, comparable(row(result, kind, j))) == \
                (expected_kind, comparable(expected))
            seen.append(i)
    for i, kind, record in result.records:
        assert codec.decode(messages[i]) == (kind, record)
        seen.append(i)
    for i, error in result.errors:
        with pytest.raises(DecodeError) as info:
            codec.decode(messages[i])
        assert str(info.value) == str(error)
        seen.append(i)
    assert sorted(seen) == list(range(len(messages)))  # each message exactly once
    return result


def test_random_mixed_batch_equals_per_record() -> None:
    codec = Codec()
    rng = random.Random(11)
    messages = []
    for _ in range(1500):
        kind = rng.choice(KINDS)
        record = random_record(rng, kind)
        try:
            messages.append(codec.encode(kind, record))
        except Exception:  # a random string beyond the length table is fine to skip
            continue
    result = check_against_codec(codec, messages)
    assert not result.errors and not result.records
    assert sum(result.count(k) for k in KINDS) == len(messages)
    # input order is kept within a kind
    for index in result.rows.values():
        assert (np.diff(index) > 0).all()


def test_column_types() -> None:
    codec = Codec()
    trades = [codec.encode("trade", {**sample("trade"), "sequence_number": i,
                                     "conditions": list(range(i % 5))}) for i in range(10)]
    result = codec.decode_batch(trades)
    cols = result.columns["trade"]
    assert cols["sequence_number"].dtype == np.int64
    assert cols["sequence_number"].tolist() == list(range(10))
    assert cols["price"].dtype == np.float64
    assert isinstance(cols["tape"], np.ma.MaskedArray) and cols["tape"].tolist() == [3] * 10
    assert cols["participant_timestamp_ns"].mask.all()
    assert cols["symbol"].tolist() == ["AAPL"] * 10
    assert cols["source"].tolist() == ["live"] * 10
    assert isinstance(cols["conditions"], ListColumn)
    assert [cols["conditions"][i] for i in range(10)] == [list(range(i % 5)) for i in range(10)]
    sub = cols["conditions"].take(np.array([4, 1]))
    assert [sub[0], sub[1]] == [[0, 1, 2, 3], [0]]


def test_bad_messages_are_errors_and_the_rest_decodes() -> None:
    codec = Codec()
    good = [codec.encode(k, sample(k)) for k in KINDS]
    rng = random.Random(3)
    bad = [b"", b"\x00", b"\xc3\x01", b"garbage!", good[0][:-1], good[1] + b"\x00",
           b"\xc3\x01" + b"\x01" * 8 + good[2][10:], b"\x00\x00\x00\x00\x05" + good[0][10:]]
    for _ in range(200):  # flipped bytes: each either decodes or is an error
        body = bytearray(rng.choice(good))
        body[rng.randrange(10, len(body))] = rng.randrange(256)
        bad.append(bytes(body))
    messages = good + bad + good
    result = check_against_codec(codec, messages)
    assert len(result.errors) >= len(bad) - 200
    for kind in KINDS:
        assert result.count(kind) >= 2


def test_array_block_count_of_min_int64_is_an_error() -> None:
    codec = Codec()
    good = codec.encode("trade", {**sample("trade"), "conditions": []})
    one = codec.encode("trade", {**sample("trade"), "conditions": [7]})
    start = next(i for i, (a, b) in enumerate(zip(good, one, strict=False)) if a != b)
    assert good[start] == 0  # the empty array: one block count of 0
    # block count zigzag(-2**63) (its absolute value overflows int64), block size 0
    bad = good[:start] + b"\xff" * 9 + b"\x01" + b"\x00" + good[start + 1:]
    result = check_against_codec(codec, [good, bad])
    assert [i for i, _ in result.errors] == [1]


def test_fuzzed_batches_agree_with_the_codec() -> None:
    """Corrupted, truncated and extended messages mixed with good ones, several rounds."""
    codec = Codec()
    rng = random.Random(99)
    for _ in range(5):
        messages = []
        for _ in range(300):
            kind = rng.choice(KINDS)
            try:
                message = codec.encode(kind, random_record(rng, kind))
            except Exception:
                continue
            roll = rng.random()
            if roll < 0.3:
                body = bytearray(message)
                for _ in range(rng.randint(1, 4)):
                    body[rng.randrange(10, len(body))] = rng.randrange(256)
                message = bytes(body)
            elif roll < 0.45:
                message = message[:rng.randrange(len(message))]
            elif roll < 0.5:
                message += bytes([rng.randrange(256)])
            messages.append(message)
        result = check_against_codec(codec, messages)
        assert result.errors and sum(result.count(k) for k in KINDS) > 100


def test_evolved_writer_schemas_go_through_the_record_path() -> None:
    writer = Codec({**{k: load_schema(k) for k in KINDS}, "trade": TRADE_V2})
    reader = Codec(writer_schemas=[TRADE_V2])
    messages = [writer.encode("trade", {**sample("trade"), "exchange_mic": "XNAS"}),
                reader.encode("trade", sample("trade"))]
    result = check_against_codec(reader, messages)
    assert result.records == [(0, "trade", sample("trade"))]
    assert result.rows["trade"].tolist() == [1]


def test_registry_framed_messages_in_a_batch(schema_registry_url: str) -> None:
    config = registry_config(schema_registry_url, unique_prefix("batch"))
    writer = make_codec(config)
    v2 = Codec({"trade": TRADE_V2}, registry=Registry(config.schema_registry),
               subjects={"trade": f"{config.kafka.topics.trades}-value"})
    messages = [writer.encode(k, sample(k)) for k in KINDS]
    messages.append(v2.encode("trade", {**sample("trade"), "exchange_mic": "XNAS"}))
    messages.append(b"\x00" + (999999).to_bytes(4, "big") + messages[0][5:])
    messages.append(Codec().encode("quote", sample("quote")))  # single-object as well
    reader = make_codec(config)
    result = check_against_codec(reader, messages)
    assert result.count("quote") == 2 and result.count("bar") == 1
    assert [i for i, _, _ in result.records] == [3]
    assert [i for i, _ in result.errors] == [4]


def test_empty_batch() -> None:
    result = Codec().decode_batch([])
    assert result.columns == {} and result.errors == [] and result.records == []


def test_a_nan_quote_price_decodes_as_nan() -> None:
    """A one-sided quote (NaN on its empty side) among ordinary records."""
    codec = Codec()
    one_sided = {**sample("quote"), "bid_price": float("nan"), "bid_size": 0.0}
    messages = [codec.encode("quote", sample("quote")), codec.encode("quote", one_sided),
                codec.encode("trade", sample("trade"))]
    result = check_against_codec(codec, messages)
    assert not result.errors and not result.records
    bids = result.columns["quote"]["bid_price"]
    assert bids[0] == sample("quote")["bid_price"] and math.isnan(bids[1])
    assert result.columns["quote"]["ask_price"][1] == one_sided["ask_price"]
