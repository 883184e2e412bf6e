"""What the schema registry costs the codec: first-use registration, a reader's first
fetch, and encoding in registry mode (which must send no request per record).

    massive-fetcher services up registry
    .venv/bin/python -m bench.registry --url http://127.0.0.1:8081/apis/ccompat/v7

Registration and fetch are timed on fresh subjects each pass (best of R, the machine is
shared); ``encode`` is µs per trade of ``Codec.encode`` with the Confluent framing next to
the single-object one, and the HTTP requests counted while encoding.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.codec.__main__ import realistic
from common.config import SchemaRegistryConfig
from schemas.codec import KINDS, Codec
from schemas.registry import Registry


def registry_codec(url: str, prefix: str, factory: Callable[[str], Any]) -> Codec:
    subjects = {k: f"{prefix}.{k.data_type}-value" for k in KINDS}
    return Codec(registry=factory(url), subjects=subjects)


def new_client(url: str) -> Registry:
    return Registry(SchemaRegistryConfig(url=url))


def measure(url: str, factory: Callable[[str], Any], records: int, repeat: int,
            ) -> dict[str, float]:
    rng = random.Random(7)
    trades = [realistic("trade", rng, i) for i in range(records)]
    register = fetch = encode = float("inf")
    requests = 0
    for _ in range(repeat):
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        writer = registry_codec(url, prefix, factory)
        start = time.perf_counter()
        writer.register_all()
        register = min(register, time.perf_counter() - start)
        framed = [writer.encode(k, realistic(k, rng, 0)) for k in KINDS]
        reader = registry_codec(url, prefix, factory)
        start = time.perf_counter()
        for data in framed:
            reader.decode(data)
        fetch = min(fetch, time.perf_counter() - start)
        sent: list[Any] = []
        client = getattr(writer._registry, "client", None)
        if client is not None:  # confluent's client: count its HTTP requests
            session = client._rest_client.session
            session.event_hooks = {"request": [sent.append]}
        encode_trade = writer.encoder("trade")
        start = time.perf_counter()
        for r in trades:
            encode_trade(r)
        encode = min(encode, time.perf_counter() - start)
        requests = max(requests, len(sent))
    plain = Codec().encoder("trade")
    single = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for r in trades:
            plain(r)
        single = min(single, time.perf_counter() - start)
    return {"register_ms": register * 1e3, "fetch_ms": fetch * 1e3,
            "encode_us": encode / records * 1e6, "single_object_us": single / records * 1e6,
            "requests_while_encoding": requests}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a Confluent-compatible registry URL")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.url, new_client, args.records, args.repeat)
    print(f"register 3 schemas (first use): {result['register_ms']:.1f} ms; "
          f"a reader's first fetch of 3 ids: {result['fetch_ms']:.1f} ms")
    print(f"encode, Confluent framing: {result['encode_us']:.2f} µs/trade; single-object: "
          f"{result['single_object_us']:.2f} µs/trade; HTTP requests while encoding "
          f"{args.records} trades: {result['requests_while_encoding']}")


if __name__ == "__main__":
    main()
