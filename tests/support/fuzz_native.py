"""``make fuzz``: both compiled paths under AddressSanitizer and UBSan, for a given time.

The test suite compares ``schemas/_native.c`` with the reference byte for byte, but a read
one byte past a buffer, or a write through a pointer to a 0-length column, can give the
right answer and corrupt the heap silently. Here the module is compiled again with
``-fsanitize=address,undefined`` and loaded in place of the installed one (Python's own
allocator off, so ASan sees every object), then fed seeded random and corrupted input
until the time is up:

- the encoder on WebSocket frames (JSON -> framed Avro), on slices of the simulator's
  stream with bytes replaced, deleted and inserted, each frame checked against the
  reference path;
- the same encoder on REST pages (the simulator's trades, quotes and bars results), mutated
  the same way, each page checked against the reference path;
- ``decode_rows`` (Avro bodies -> columns), on random records of our three schemas and of
  a schema with every type it supports (a plain ``null`` field included), truncated,
  extended and with bytes flipped, each good body checked against fastavro.

The first sanitizer report aborts the run with its stack; exit 0 means none was seen.
Usage: ``python -m tests.support.fuzz_native --seconds 60`` (``make fuzz FUZZ_SECONDS=60``).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHILD_ENV = "MASSIVE_FETCHER_FUZZ_MODULE"

# Every type decode_rows takes natively, beside our schemas' own.
NATIVE_WIDE_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Everything", "namespace": "fuzz",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "f32", "type": "float"},
        {"name": "blob", "type": "bytes"},
        {"name": "nothing", "type": "null"},
        {"name": "maybe_blob", "type": ["null", "bytes"]},
        {"name": "maybe_text_last", "type": ["string", "null"]},
        {"name": "color", "type": {"type": "enum", "name": "Color",
                                   "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "longs", "type": {"type": "array", "items": "long"}},
        {"name": "doubles", "type": {"type": "array", "items": "double"}},
        {"name": "ints", "type": {"type": "array", "items": "int"}},
        {"name": "maybe_x_ns", "type": ["null", "long"]},
        {"name": "i", "type": "int"},
        {"name": "text", "type": "string"},
        {"name": "d", "type": "double"},
    ]}


def build(out_dir: Path) -> Path:
    """The extension compiled with ASan + UBSan (any UB aborts), warnings as errors."""
    target = out_dir / f"_native{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
                    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-Wall", "-Werror", f"-I{sysconfig.get_paths()['include']}",
                    str(ROOT / "schemas" / "_native.c"), "-o", str(target)], check=True)
    return target


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], check=True,
                          capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        raise SystemExit(f"fuzz: gcc has no {name} (install its sanitizer runtime)")
    return path


def _load(path: str) -> Any:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("schemas._native", path)
    spec = importlib.util.spec_from_file_location("schemas._native", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["schemas._native"] = module  # before schemas.native looks for it
    return module


def fuzz_frames(rng: random.Random, rounds: int) -> int:
    import orjson

    from common.config import Config
    from producer.nativeframes import NativeFrames
    from schemas.codec import make_codec
    from tests.support.mutation import FRAME_ALPHABET, mutate
    from tests.support.nativeframes import TOPICS, check_frame, events_by_time

    the_codec = make_codec(Config())
    encoder = NativeFrames(the_codec, TOPICS)
    assert encoder.enabled, "the frame encoder is not on the native path"
    events = events_by_time()
    taken = 0
    for _ in range(rounds):
        start = rng.randrange(len(events) - 30)
        frame = orjson.dumps(events[start:start + rng.randint(1, 30)])
        taken += check_frame(encoder, the_codec, mutate(rng, frame, FRAME_ALPHABET))
    return taken


def fuzz_pages(rng: random.Random, rounds: int) -> int:
    import orjson

    from backfill.nativepages import NativePages
    from common.config import Config
    from schemas.codec import make_codec
    from tests.support.mutation import PAGE_ALPHABET, mutate
    from tests.support.nativeframes import check_page, simulator_pages

    the_codec = make_codec(Config())
    pages = NativePages(the_codec)
    assert pages.kinds, "the page encoder is not on the native path"
    taken = 0
    for kind, results in simulator_pages().items():
        for _ in range(rounds // 3):
            start = rng.randrange(len(results) - 10)
            body = orjson.dumps({"results": results[start:start + rng.randint(0, 10)],
                                 "status": "OK", "next_url": "http://h/?c=1"})
            taken += check_page(pages, the_codec, kind, mutate(rng, body, PAGE_ALPHABET))
    return taken


def fuzz_rows(native: Any, rng: random.Random, rounds: int) -> int:
    import fastavro
    import numpy as np

    from schemas.batch import _native_field
    from schemas.codec import KINDS, load_schema
    from schemas.fastpath import _expand
    from tests.support.mutation import mutate
    from tests.support.samples import random_record

    checked = 0
    for schema in [*(load_schema(k) for k in KINDS), NATIVE_WIDE_SCHEMA]:
        expanded = _expand(schema)
        program = [_native_field(f["type"]) for f in expanded["fields"]]
        assert all(p is not None for p in program), schema["name"]
        parsed = fastavro.parse_schema(schema)
        bodies, good = [], []
        for _ in range(rounds):
            out = io.BytesIO()
            fastavro.schemaless_writer(out, parsed, random_record(rng, expanded))
            body = out.getvalue()
            roll = rng.random()
            if roll < 0.3:
                body = mutate(rng, body, bytes(range(256)))
            elif roll < 0.45:
                body = body[:rng.randrange(len(body) + 1)]
            elif roll < 0.5:
                body += bytes([rng.randrange(256)])
            else:
                good.append(len(bodies))
            bodies.append(body)
        starts = np.cumsum([0] + [len(b) for b in bodies[:-1]], dtype=np.int64)
        ends = starts + np.array([len(b) for b in bodies], dtype=np.int64)
        _cols, bad = native.decode_rows(b"".join(bodies), starts.tobytes(), ends.tobytes(),
                                        program)
        assert not any(bad[i] for i in good), f"{schema['name']}: a good body decoded as bad"
        checked += len(bodies)
    return checked


def child(seconds: float, seed: int) -> int:
    native = _load(os.environ[CHILD_ENV])
    deadline = time.monotonic() + seconds
    frames = pages = rows = 0
    round_no = 0
    while True:
        rng = random.Random(seed + round_no)
        frames += fuzz_frames(rng, 500)
        pages += fuzz_pages(rng, 300)
        rows += fuzz_rows(native, rng, 500)
        round_no += 1
        if time.monotonic() >= deadline:
            break
    print(f"fuzz: {round_no} rounds, {frames} frames and {pages} pages on the native path, "
          f"{rows} bodies "
          f"decoded, no sanitizer report (seeds {seed}..{seed + round_no - 1})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="fuzz_native", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be > 0")
    if CHILD_ENV in os.environ:
        return child(args.seconds, args.seed)
    with tempfile.TemporaryDirectory(prefix="mf-fuzz-") as tmp:
        module = build(Path(tmp))
        env = {**os.environ, CHILD_ENV: str(module), "PYTHONMALLOC": "malloc",
               "LD_PRELOAD": _runtime("libasan.so"),
               # CPython keeps its objects to the end: leaks are not what this looks for
               "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
        return subprocess.run([sys.executable, "-m", "tests.support.fuzz_native",
                               "--seconds", str(args.seconds), "--seed", str(args.seed)],
                              cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
