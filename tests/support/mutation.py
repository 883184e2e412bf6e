"""Random byte-level corruption of a valid input, for the native paths' differential tests
and ``make fuzz``: the same mutations in both, so a seed that fails in one reproduces in
the other."""

from __future__ import annotations

import random

# The characters a WebSocket frame is made of, plus a few that break UTF-8 or JSON.
FRAME_ALPHABET = b'{}[]",:.-+eE0123456789 \\nulltruefalsexyzTQds\xc3\xa9\x00\x7f'
# The same for a REST page body.
PAGE_ALPHABET = b'{}[]",:.-+eE0123456789 \\nulltruefalsexyzrs\xc3\xa9\x00\x7f'


def mutate(rng: random.Random, data: bytes, alphabet: bytes) -> bytes:
    """Up to four bytes replaced, deleted or inserted (from ``alphabet``) at random places."""
    out = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        if not out:
            break
        pos, op = rng.randrange(len(out)), rng.random()
        if op < 0.4:
            out[pos] = rng.choice(alphabet)
        elif op < 0.7:
            del out[pos]
        else:
            out.insert(pos, rng.choice(alphabet))
    return bytes(out)
