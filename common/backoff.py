"""Exponential backoff with "equal jitter", shared by every retry loop that waits on a peer
(the producer's reconnects, the REST client's retries)."""

from __future__ import annotations

import random


def backoff_s(step: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before retry ``step`` (0 for the first): a random point in the upper
    half of ``min(max_s, initial_s * 2**step)``, so that many clients spread out but none
    retries almost at once."""
    delay = min(max_s, initial_s * (2 ** min(step, 60)))
    return random.uniform(delay / 2, delay)
