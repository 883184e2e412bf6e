"""µs per record for fastavro vs the schema-specialised codec, encode and decode, per kind.

    .venv/bin/python -m bench.codec [--records N] [--repeat R]

Each figure is the best of R timed passes over the same N realistic records (best-of, because
this machine is shared: slower passes measure the neighbours, not the code). The passes of
the implementations alternate so all see the same machine state. "fastavro"/"fast" time the
bare Avro body functions; "codec" column times ``Codec.encode``/``Codec.decode`` including the
framing (single-object header, fingerprint lookup, trailing-bytes check).
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable
from typing import Any

import fastavro
from fastavro.schema import parse_schema

from schemas import fastpath
from schemas.codec import KINDS, Codec, load_schema

T0 = 1_764_000_000_000_000_000  # a 2025 Unix-ns timestamp


def realistic(kind: str, rng: random.Random, i: int) -> dict[str, Any]:
    """Records shaped like the live stream (ms timestamps scaled to ns, small ids)."""
    sym = rng.choice(["AAPL", "MSFT", "AMZN", "SPY", "NVDA", "BRK.A", "TSLA", "QQQ"])
    t = T0 + i * 1_000_000 + rng.randrange(1000) * 1_000_000
    live = rng.random() < 0.8
    if kind == "trade":
        return {"symbol": sym, "sip_timestamp_ns": t,
                "participant_timestamp_ns": None if live else t - 250_000,
                "trf_timestamp_ns": None if live or rng.random() < 0.7 else t - 1000,
                "price": round(rng.uniform(10, 900), 2), "size": float(rng.randrange(1, 500)),
                "exchange": rng.randrange(1, 21), "tape": rng.randrange(1, 4),
                "conditions": rng.choice([[], [14], [14, 41], [12, 37, 41]]),
                "id": str(rng.randrange(1, 10**6)), "sequence_number": 4_000_000 + i,
                "trf_id": None, "correction": None, "source": "live" if live else "backfill",
                "received_ns": t + 800_000 if live else None}
    if kind == "quote":
        bid = round(rng.uniform(10, 900), 2)
        return {"symbol": sym, "sip_timestamp_ns": t,
                "participant_timestamp_ns": None if live else t - 250_000,
                "trf_timestamp_ns": None, "bid_price": bid, "bid_size": float(rng.randrange(100)),
                "bid_exchange": rng.randrange(1, 21), "ask_price": bid + 0.01,
                "ask_size": float(rng.randrange(100)), "ask_exchange": rng.randrange(1, 21),
                "conditions": [1] if rng.random() < 0.5 else [],
                "indicators": [] if rng.random() < 0.9 else [604],
                "sequence_number": 9_000_000 + i, "tape": rng.randrange(1, 4),
                "source": "live" if live else "backfill",
                "received_ns": t + 800_000 if live else None}
    o = round(rng.uniform(10, 900), 2)
    return {"symbol": sym, "timeframe": "1Min", "start_ns": t - t % 60_000_000_000,
            "end_ns": t - t % 60_000_000_000 + 60_000_000_000, "open": o, "high": o + 1,
            "low": o - 1, "close": o + 0.5, "volume": float(rng.randrange(10**6)),
            "vwap": o + 0.2, "trades": None if live else rng.randrange(10**4),
            "accumulated_volume": float(rng.randrange(10**8)) if live else None,
            "official_open": o if live else None, "day_vwap": o if live else None,
            "average_trade_size": 50.0 if live else None, "otc": False,
            "source": "live" if live else "backfill",
            "received_ns": t + 800_000 if live else None}



def _once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=5000,
                        help="messages per decode_batch call (a consumer poll)")
    args = parser.parse_args()
    n, repeat = args.records, args.repeat
    rng = random.Random(42)
    fast_codec = Codec()
    batch_results: dict[str, tuple[list[bytes], Callable[[], None]]] = {}
    print(f"{n} records per kind, best of {repeat} alternating passes; µs per record")
    print("body: the Avro body alone (fastavro schemaless_writer/reader vs generated);")
    print("codec: Codec.encode/decode with the single-object framing, and records/s")
    print(f"{'':14}{'fastavro':>10}{'fast':>10}{'speed-up':>10}{'codec':>10}"
          f"{'codec/s':>12}")
    for kind in KINDS:
        schema = load_schema(kind)
        parsed = parse_schema(schema, named_schemas={})
        records = [realistic(kind, rng, i) for i in range(n)]
        enc = fastpath.compile_encoder(schema)
        dec = fastpath.compile_decoder(schema)
        assert enc is not None and dec is not None
        bodies = [enc(r) for r in records]
        framed = [fast_codec.encode(kind, r) for r in records]

        def fa_encode(records: list[dict[str, Any]] = records, parsed: Any = parsed) -> None:
            for r in records:
                out = io.BytesIO()
                fastavro.schemaless_writer(out, parsed, r)
                out.getvalue()

        def fa_decode(bodies: list[bytes] = bodies, parsed: Any = parsed) -> None:
            for b in bodies:
                fastavro.schemaless_reader(io.BytesIO(b), parsed, None)

        def fp_encode(records: list[dict[str, Any]] = records, enc: Any = enc) -> None:
            for r in records:
                enc(r)

        def fp_decode(bodies: list[bytes] = bodies, dec: Any = dec) -> None:
            for b in bodies:
                dec(b, 0)

        def codec_encode(codec: Codec, kind: str = kind,
                         records: list[dict[str, Any]] = records) -> Callable[[], None]:
            def run() -> None:
                encode = codec.encode
                for r in records:
                    encode(kind, r)
            return run

        def codec_decode(codec: Codec,
                         framed: list[bytes] = framed) -> Callable[[], None]:
            def run() -> None:
                decode = codec.decode
                for b in framed:
                    decode(b)
            return run

        pairs = [("encode", fa_encode, fp_encode, codec_encode(fast_codec)),
                 ("decode", fa_decode, fp_decode, codec_decode(fast_codec))]
        for label, slow, fast, framed_fn in pairs:
            times: list[list[float]] = [[], [], []]
            for _ in range(repeat):
                for t, fn in zip(times, (slow, fast, framed_fn), strict=True):
                    t.append(_once(fn) / n * 1e6)
            s, f, c = (min(t) for t in times)
            print(f"{kind:6} {label:7}{s:10.2f}{f:10.2f}{s / f:9.1f}x{c:10.2f}{1e6 / c:>12,.0f}")
        batch_results[kind] = (framed, fa_decode)
    print(f"\nbatch decode into numpy columns (Codec.decode_batch), {args.batch} messages "
          "per call; µs per record")
    print(f"{'':14}{'fastavro':>10}{'batch':>10}{'speed-up':>10}{'records/s':>12}")
    for kind, (framed, fa_decode) in batch_results.items():
        chunks = [framed[i:i + args.batch] for i in range(0, len(framed), args.batch)]

        def batch_decode(chunks: list[list[bytes]] = chunks) -> None:
            for chunk in chunks:
                fast_codec.decode_batch(chunk)

        slow_t, fast_t = [], []
        for _ in range(repeat):
            slow_t.append(_once(fa_decode) / n * 1e6)
            fast_t.append(_once(batch_decode) / n * 1e6)
        s, f = min(slow_t), min(fast_t)
        print(f"{kind:6} {'decode':7}{s:10.2f}{f:10.2f}{s / f:9.1f}x{1e6 / f:>12,.0f}")


if __name__ == "__main__":
    main()
