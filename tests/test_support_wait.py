"""tests.support.wait.wait_for: returns on the condition, fails with what it waited for."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.wait import wait_for, wait_for_async


def test_returns_once_the_condition_holds() -> None:
    calls = itertools.count(1)
    wait_for(lambda: next(calls) >= 3, 5, "the third call")
    assert next(calls) == 4


def test_a_timeout_names_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for nothing"):
        wait_for(lambda: False, 0.05, "nothing")


def test_retried_exceptions_count_as_not_yet_and_the_last_is_chained() -> None:
    calls = itertools.count(1)

    def flaky() -> bool:
        if next(calls) < 3:
            raise ConnectionError("not up yet")
        return True

    wait_for(flaky, 5, "the server", retry_on=(ConnectionError,))
    with pytest.raises(AssertionError) as failed:
        wait_for(lambda: 1 / 0, 0.05, "a division", retry_on=(ZeroDivisionError,))
    assert isinstance(failed.value.__cause__, ZeroDivisionError)


def test_other_exceptions_are_not_retried() -> None:
    with pytest.raises(KeyError):
        wait_for(lambda: {}["x"], 5, "a key", retry_on=(ConnectionError,))


def test_the_async_wait_lets_the_loop_run_until_the_condition_holds() -> None:
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        task = asyncio.create_task(ticker())
        await wait_for_async(lambda: ticks >= 5, 5, "five ticks")
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 5


def test_the_async_wait_fails_like_the_sync_one() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.05s waiting for never"):
        asyncio.run(wait_for_async(lambda: False, 0.05, "never"))
    with pytest.raises(AssertionError) as failed:
        asyncio.run(wait_for_async(lambda: 1 / 0, 0.05, "a division",
                                   retry_on=(ZeroDivisionError,)))
    assert isinstance(failed.value.__cause__, ZeroDivisionError)
