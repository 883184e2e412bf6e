"""Reads that meet a torn block ("snappy: corrupt input") are read again: the pure retry,
and ``tail``'s and the consumer's reads against a real MarketStore while a bucket is being
appended to (which is how the torn answers are provoked)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from consumer.buckets import DTYPES
from consumer.tornread import ATTEMPTS, is_torn, read_whole
from consumer.writer import MarketStoreWriter
from massive_fetcher.tail import Reader, StillTorn
from tests.support.testkit import unique
from tests.support.wait import wait_for

TORN = "DataService.Query failed: snappy: corrupt input: None"
CLOSED = ("DataService.Query failed: ConnectionError: ('Connection aborted.', "
          "RemoteDisconnected('Remote end closed connection without response'))")


class Reads:
    """A fake read: answers torn ``torn`` times, then ``value``."""

    def __init__(self, torn: int, message: str = TORN) -> None:
        self.torn, self.message, self.calls = torn, message, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.torn:
            raise Exception(self.message)
        return "rows"


def test_a_torn_answer_is_read_again_after_growing_pauses() -> None:
    slept: list[float] = []
    read = Reads(torn=3)
    assert read_whole(read, sleep=slept.append) == "rows"
    assert read.calls == 4
    assert slept == [0.05, 0.1, 0.2]


def test_the_retries_are_bounded_and_the_last_torn_answer_is_raised() -> None:
    slept: list[float] = []
    read = Reads(torn=100)
    with pytest.raises(Exception, match="snappy: corrupt input"):
        read_whole(read, sleep=slept.append)
    assert read.calls == ATTEMPTS
    assert len(slept) == ATTEMPTS - 1 and max(slept) == 1.0


def test_any_other_error_is_raised_at_once() -> None:
    def refused() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        read_whole(refused, sleep=pytest.fail)
    assert not is_torn(ConnectionError("refused")) and is_torn(Exception(TORN))


def test_a_connection_closed_without_an_answer_is_torn_too() -> None:
    # the server's handler panicked on the torn block (readSecondStage, slice bounds)
    read = Reads(torn=1, message=CLOSED)
    assert read_whole(read, sleep=lambda _: None) == "rows" and read.calls == 2


def test_tail_says_so_in_one_line_when_every_read_is_torn(marketstore_url: str) -> None:
    reader = Reader(marketstore_url)
    reader._client = type("Client", (), {"query": lambda self, params: Reads(100)()})()
    with pytest.raises(StillTorn, match=f"answered {ATTEMPTS} reads of X/1Sec/TRADE "
                                        "with a torn block \\(DataService"):
        reader.query("X/1Sec/TRADE", limit=10, from_start=False)


# -- against MarketStore -------------------------------------------------------------------

ROWS_PER_WRITE = 50
ROWS_PER_SECOND = 1000  # each one-second interval is appended to 20 times


class Appender:
    """Appends trades to one bucket as fast as MarketStore takes them, until paused. A
    tail read of such a bucket often meets a torn block (seen here: one in two to five)."""

    def __init__(self, url: str, tbk: str) -> None:
        self.writer = MarketStoreWriter(url)
        self.tbk = tbk
        self.written = 0
        self.pause = threading.Event()
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="appender", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopped.is_set():
                if self.pause.is_set():
                    self.paused.set()  # between two writes: no append is under way
                    self.stopped.wait(0.05)
                    continue
                rows = np.zeros(ROWS_PER_WRITE, dtype=DTYPES["TRADE"])
                seq = self.written + np.arange(ROWS_PER_WRITE)
                rows["SequenceNumber"] = seq
                rows["Price"] = 100.0
                rows["Epoch"] = 1_764_000_000 + seq // ROWS_PER_SECOND
                self.writer.write({self.tbk: rows})
                self.written += ROWS_PER_WRITE
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def hold(self) -> None:
        """Pause after the write under way (so the next read is whole)."""
        self.pause.set()
        wait_for(self.paused.is_set, timeout_s=60, what="the appender to pause")

    def resume(self) -> None:
        self.paused.clear()
        self.pause.clear()


@pytest.fixture
def appender(marketstore_url: str) -> Iterator[Appender]:
    tbk = f"{unique('TORN')}/1Sec/TRADE"
    app = Appender(marketstore_url, tbk)
    app.thread.start()
    wait_for(lambda: app.written >= 10 * ROWS_PER_WRITE or app.error is not None,
             timeout_s=60, what="the first appends")
    yield app
    app.stopped.set()
    app.thread.join(30)
    MarketStoreWriter(marketstore_url).destroy(tbk)
    assert app.error is None, app.error


def _tail_read(url: str) -> tuple[Callable[[str], Any], Callable[[Callable[..., Any]], None]]:
    reader = Reader(url)
    client = reader._client

    def wrap(hook: Callable[..., Any]) -> None:
        reader._client = type("Hooked", (), {"query": lambda self, params: hook(
            client.query, params)})()

    return (lambda tbk: reader.query(tbk, limit=10, from_start=False)), wrap


def _consumer_read(url: str) -> tuple[Callable[[str], Any], Callable[[Callable[..., Any]], None]]:
    writer = MarketStoreWriter(url)
    call = writer._call

    def wrap(hook: Callable[..., Any]) -> None:
        writer._call = lambda method, **params: hook(call, method, **params)  # type: ignore

    return (lambda tbk: writer.query([tbk], limit=10, from_start=False)[tbk]), wrap


@pytest.mark.integration
@pytest.mark.parametrize("make", [_tail_read, _consumer_read], ids=["tail", "consumer"])
def test_a_read_that_meets_an_append_is_read_again_and_whole(
        marketstore_url: str, appender: Appender, make: Callable[..., Any]) -> None:
    read, wrap = make(marketstore_url)
    torn: list[str] = []

    def hook(real: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        except Exception as exc:
            if is_torn(exc):
                torn.append(str(exc))
                appender.hold()  # the read again comes after the append it met
            raise

    wrap(hook)
    for _ in range(2):
        _until_a_torn_read_is_read_again(read, appender, torn)
        appender.resume()


def _until_a_torn_read_is_read_again(read: Callable[[str], Any], appender: Appender,
                                     torn: list[str]) -> None:
    seen = len(torn)

    def recovered() -> bool:
        rows = read(appender.tbk)  # raises if every attempt was torn
        if len(torn) == seen:
            return False  # whole at once: read again
        # the appender paused at the torn answer: the rows are the last ten it wrote
        assert list(rows["SequenceNumber"]) == list(range(appender.written - 10,
                                                          appender.written))
        return True

    wait_for(recovered, timeout_s=120, interval_s=0.01,
             what="a read that met a torn block and was read again, whole")
