"""common.backoff: the one backoff schedule of the retry loops."""

from __future__ import annotations

from common.backoff import backoff_s


def test_backoff_grows_doubles_caps_and_jitters_in_the_upper_half() -> None:
    for step, top in ((0, 0.5), (1, 1.0), (3, 4.0), (6, 10.0), (10_000, 10.0)):
        waits = [backoff_s(step, 0.5, 10.0) for _ in range(200)]
        assert all(top / 2 <= w <= top for w in waits), (step, min(waits), max(waits))
        assert max(waits) - min(waits) > top / 10  # jittered, not a fixed step
