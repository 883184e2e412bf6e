"""Reading again when MarketStore answers with a torn block (pure: the read is passed in).

MarketStore (v4.1.23) rewrites the compressed block of a variable-length bucket's interval
on every append to it. A read that meets the rewrite half done fails in one of two ways:
the server answers "snappy: corrupt input", or its handler panics (``readSecondStage``:
slice bounds out of range) and the connection closes without an answer. The bucket is
not damaged, and a read a moment later is whole. Reads of the newest rows of a bucket being
written (``tail``, the consumer's dedupe reads) are the ones that meet it, so every product
read goes through :func:`read_whole`; a read changes nothing, so reading again is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TORN_ANSWERS = ("snappy: corrupt input", "Remote end closed connection without response")
# Reads of one request; between them 0.05, 0.1, 0.2 ... s, at most MAX_DELAY_S: a few
# seconds in all, long enough to get past a burst of appends, short enough for a caller
# that then reports the error (or retries with its own back-off).
ATTEMPTS = 8
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0


def is_torn(exc: BaseException) -> bool:
    text = str(exc)
    return any(answer in text for answer in TORN_ANSWERS)


def read_whole(read: Callable[[], T], attempts: int = ATTEMPTS,
               first_delay_s: float = FIRST_DELAY_S, max_delay_s: float = MAX_DELAY_S,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``read()``, again after a short sleep while it fails with a torn block. Any other
    error is raised at once, and so is the last torn answer after ``attempts`` of them."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return read()
        except Exception as exc:
            if not is_torn(exc) or attempt == attempts:
                raise
        sleep(delay)
        delay = min(delay * 2, max_delay_s)
    raise AssertionError("unreachable: the last attempt returns or raises")
