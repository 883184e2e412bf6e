"""Run backfill windows: REST pages -> records -> the shared Publisher, then checkpoint.

Windows run ``parallelism`` at a time. Mapping, encoding and producing happen on a worker
thread in chunks, so the event loop (which in the producer process also serves the live
WebSocket) only ever waits for I/O. A window is checkpointed only once Kafka has
acknowledged everything produced before it finished, its dead letters included: a
committer pauses publishing briefly, flushes, and if the flush returns 0 with no new
delivery failures it records the finished windows. Windows that reach into the future
(today) are never checkpointed.

Pages go through the compiled page encoder (``backfill.nativepages``) when it is built: the
JSON bytes of a page become framed Avro records in one pass, which are then produced as
they are. A page it does not take exactly (or every page, without the build) is decoded as
JSON and mapped and encoded record by record (the reference path), with the same bytes.

A REST result that cannot become a record (a field missing or mistyped, a value outside
the schema) is never skipped silently. With a dead-letter producer it goes to the
dead-letter topic as its JSON, with the reason and the window (``common.deadletter``), and
is counted in ``Progress.dead_letters``; the window's other records are published and the
window is checkpointed as usual. Without one (the caller gave none) the window's other
records are still published, but the window fails: it is not checkpointed and the
failure names the window and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from backfill.checkpoint import Checkpoint
from backfill.client import MassiveRestClient, RestError
from backfill.mapping import MappingError, bar_from_rest, quote_from_rest, trade_from_rest
from backfill.nativepages import EncodedPage, NativePages
from backfill.plan import Window, request_for
from schemas.codec import EncodeError

log = logging.getLogger("backfill.engine")


class Sink(Protocol):
    """What the engine needs of ``producer.publisher.Publisher``."""

    failed: int

    def produce_many(self, items: list[tuple[str, str, bytes]]) -> None: ...
    def produce_values(self, kind: str, symbol: str, values: list[bytes]) -> None: ...
    def flush(self, timeout_s: float = 30.0) -> int: ...


class Encoder(Protocol):
    def encode(self, kind: str, record: dict[str, Any]) -> bytes: ...


class DeadLetters(Protocol):
    """What the engine needs of ``common.deadletter.DeadLetterProducer``."""

    topic: str
    failed: int

    def send(self, key: str, value: bytes, exc: BaseException, reason: str,
             source: dict[str, object]) -> None: ...
    def flush(self, timeout_s: float = 30.0) -> int: ...


class FatalBackfillError(Exception):
    """Nothing more can succeed (bad API key, Kafka failure): the run stops."""


@dataclass
class Progress:
    symbols_total: int = 0
    symbols_done: int = 0
    windows_total: int = 0
    windows_done: int = 0  # fetched and published in this run
    windows_skipped: int = 0  # already in the checkpoint
    windows_failed: int = 0
    windows_checkpointed: int = 0
    pages: int = 0
    records: int = 0
    bad_results: int = 0  # REST results that could not be mapped or encoded
    dead_letters: int = 0  # of those, sent to the dead-letter topic
    partial_bars: int = 0  # bars not over yet when fetched (skipped)
    started: float = field(default_factory=time.monotonic)
    map_s: float = 0.0  # CPU seconds (thread time) of each stage
    encode_s: float = 0.0
    produce_s: float = 0.0
    flush_s: float = 0.0  # wall seconds waiting for Kafka acknowledgements
    failures: list[str] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def windows_finished(self) -> int:
        return self.windows_done + self.windows_skipped + self.windows_failed

    @property
    def eta_s(self) -> float | None:
        """Remaining time at the rate of the windows fetched so far (None: unknown yet)."""
        left = self.windows_total - self.windows_finished
        if left <= 0:
            return 0.0
        if not self.windows_done:
            return None
        return self.elapsed_s / self.windows_done * left

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta_s
        return {
            "symbols": f"{self.symbols_done}/{self.symbols_total}",
            "windows": f"{self.windows_finished}/{self.windows_total}",
            "windows_done": self.windows_done, "windows_skipped": self.windows_skipped,
            "windows_failed": self.windows_failed,
            "windows_checkpointed": self.windows_checkpointed,
            "pages": self.pages, "records": self.records, "bad_results": self.bad_results,
            "dead_letters": self.dead_letters,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.records / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "eta_s": None if eta is None else round(eta, 1),
        }


def _mapper(window: Window) -> Callable[[dict[str, Any]], dict[str, Any]]:
    symbol = window.symbol
    if window.data_type == "bars":
        timeframe = window.timeframe
        return lambda r: bar_from_rest(r, symbol, timeframe)
    if window.data_type == "trades":
        return lambda r: trade_from_rest(r, symbol)
    return lambda r: quote_from_rest(r, symbol)


class BackfillEngine:
    def __init__(self, client: MassiveRestClient, sink: Sink, encoder: Encoder,
                 checkpoint: Checkpoint | None, *, parallelism: int = 4, limit: int = 50000,
                 adjusted: bool = True, stop: asyncio.Event | None = None,
                 commit_interval_s: float = 1.0, flush_timeout_s: float = 30.0,
                 chunk: int = 5000, now_ns: Callable[[], int] = time.time_ns,
                 room: tuple[float, float] = (0.8, 0.5), stop_grace_s: float = 5.0,
                 dead_letters: DeadLetters | None = None,
                 native: NativePages | None = None) -> None:
        self.client = client
        self.sink = sink
        self.dead_letters = dead_letters
        self.encoder = encoder
        # the compiled page encoder (None: every page takes the reference path)
        self.native = native if native is not None else NativePages(encoder)
        self.checkpoint = checkpoint
        self.parallelism = max(1, parallelism)
        self.limit = limit
        self.adjusted = adjusted
        self.stop = stop or asyncio.Event()
        self.commit_interval_s = commit_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.chunk = max(1, chunk)
        self.now_ns = now_ns
        self.stop_grace_s = stop_grace_s
        # Before each chunk wait (asynchronously) while the Kafka queue is above room[0] of
        # its capacity until it is below room[1]: a shared publisher keeps room for live data.
        self.room = room
        self._wait_for_room = getattr(sink, "wait_for_room", None)
        self.progress = Progress()
        self._fatal: BaseException | None = None
        # publish/flush gate: flushing waits for in-flight publish calls, and blocks new ones
        self._gate = asyncio.Condition()
        self._publishing = 0
        self._flushing = False
        self._pending: list[tuple[str, int]] = []  # finished, not yet acknowledged
        self._in_progress: set[str] = set()
        self._tainted: set[str] = set()  # windows with a record Kafka failed to deliver
        self._bad: dict[str, tuple[int, str]] = {}  # window -> (bad results, the first reason)
        self._failed_seen = self._failed_total()
        self._symbol_left: dict[str, int] = {}

    # -- public ------------------------------------------------------------------------

    async def run(self, windows: Iterable[Window]) -> Progress:
        """Run every window not in the checkpoint; returns the progress counters."""
        todo: list[Window] = []
        for w in windows:
            self.progress.windows_total += 1
            self._symbol_left[w.symbol] = self._symbol_left.get(w.symbol, 0) + 1
            todo.append(w)
        self.progress.symbols_total = len(self._symbol_left)
        queue: asyncio.Queue[Window] = asyncio.Queue()
        for w in todo:
            if self.checkpoint is not None and w.id in self.checkpoint:
                self.progress.windows_skipped += 1
                self._finish_symbol(w.symbol)
            else:
                queue.put_nowait(w)
        committer = asyncio.create_task(self._commit_loop(), name="backfill-commit")
        workers = [asyncio.create_task(self._worker(queue), name=f"backfill-{i}")
                   for i in range(min(self.parallelism, max(1, queue.qsize())))]
        gathered = asyncio.gather(*workers)
        # Cancelled (the producer stopping), a gather ends with CancelledError as its
        # exception, which asyncio would log with a traceback as "never retrieved" when this
        # task is cancelled before it reads it; the normal path raises it via result().
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        stopping = asyncio.create_task(self.stop.wait())
        try:
            waiting: set[asyncio.Future[Any]] = {gathered, stopping}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not gathered.done():
                # stopped: let in-flight pages finish briefly, then cancel (a request may be
                # sleeping through retries); unfinished windows are simply not checkpointed
                await asyncio.wait({gathered}, timeout=self.stop_grace_s)
            if gathered.done() and not gathered.cancelled():
                gathered.result()
        finally:
            stopping.cancel()
            gathered.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self._commit()
            if self._tainted:  # found by any commit, the final one included
                self.progress.failures.append(
                    f"{len(self._tainted)} window(s) had Kafka delivery failures")
        if self._fatal is not None:
            raise FatalBackfillError(str(self._fatal)) from self._fatal
        return self.progress

    # -- workers -----------------------------------------------------------------------

    async def _worker(self, queue: asyncio.Queue[Window]) -> None:
        while not self.stop.is_set() and self._fatal is None:
            try:
                window = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._in_progress.add(window.id)
            try:
                records = await self._run_window(window)
            except RestError as exc:
                self.progress.windows_failed += 1
                self.progress.failures.append(f"{window.id}: {exc}")
                log.error("backfill window failed", extra={"window": window.id,
                                                           "error": str(exc)})
                if exc.status in (401, 403):
                    self._fatal = exc
                self._in_progress.discard(window.id)
                self._finish_symbol(window.symbol)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka or codec failure: stop, keep what is done
                self._fatal = exc
                self._in_progress.discard(window.id)
                log.exception("backfill stopped", extra={"window": window.id})
                return
            self._in_progress.discard(window.id)
            if records is None:  # stopped midway
                return
            bad = self._bad.pop(window.id, None)
            if bad is not None:
                self.progress.windows_failed += 1
                self.progress.failures.append(
                    f"{window.id}: {bad[0]} bad REST result(s), first: {bad[1]}")
                log.error("backfill window failed: bad REST results", extra={
                    "window": window.id, "bad_results": bad[0], "error": bad[1]})
                self._finish_symbol(window.symbol)
                continue
            self.progress.windows_done += 1
            self._finish_symbol(window.symbol)
            if window.end_ns <= self.now_ns() and window.id not in self._tainted:
                self._pending.append((window.id, records))

    def _finish_symbol(self, symbol: str) -> None:
        self._symbol_left[symbol] -= 1
        if self._symbol_left[symbol] == 0:
            self.progress.symbols_done += 1

    async def _run_window(self, window: Window) -> int | None:
        path, params = request_for(window, self.limit, self.adjusted)
        mapper = _mapper(window)
        total = 0
        decode = self._decoder(window)
        pages = (self.client.pages(path, params, decode) if decode is not None
                 else self.client.pages(path, params))
        # the next page is requested while this one is published (HTTP overlaps CPU work)
        upcoming: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(pages))
        try:
            while True:
                try:
                    page = await upcoming
                except StopAsyncIteration:
                    return total
                if self.stop.is_set():
                    return None
                upcoming = asyncio.ensure_future(anext(pages))
                self.progress.pages += 1
                if isinstance(page, EncodedPage):
                    self.progress.encode_s += page.cpu_s
                    if page.records:
                        total += await self._publish_values(window, page.records)
                else:
                    results = page.get("results") or []
                    if results:
                        total += await self._publish(window, mapper, results)
                await asyncio.sleep(0)  # let the live path run between pages
        finally:
            if not upcoming.done():
                upcoming.cancel()
                await asyncio.gather(upcoming, return_exceptions=True)
            elif not upcoming.cancelled():
                upcoming.exception()  # retrieved: a prefetch error after a stop is moot
            await pages.aclose()

    def _decoder(self, window: Window) -> Callable[[bytes], EncodedPage | None] | None:
        """The compiled decoder of this window's pages, or None for the reference path
        (which also drops bars still running: a window that reaches past now)."""
        if window.kind == "bar" and window.end_ns > self.now_ns():
            return None
        return self.native.decoder(window.kind, window.symbol, window.timeframe or None)

    async def _publish_values(self, window: Window, values: list[bytes]) -> int:
        """Produce records the native path encoded, in chunks, like :meth:`_publish`."""
        for i in range(0, len(values), self.chunk):
            async with self._producing():
                await asyncio.to_thread(self._produce_values_sync, window,
                                        values[i:i + self.chunk])
        return len(values)

    def _produce_values_sync(self, window: Window, values: list[bytes]) -> None:
        started = time.thread_time()
        self.sink.produce_values(window.kind, window.symbol, values)
        self.progress.produce_s += time.thread_time() - started
        self.progress.records += len(values)

    async def _publish(self, window: Window, mapper: Callable[[dict[str, Any]], dict[str, Any]],
                       results: list[dict[str, Any]]) -> int:
        published = 0
        for i in range(0, len(results), self.chunk):
            async with self._producing():
                published += await asyncio.to_thread(
                    self._publish_sync, window, mapper, results[i:i + self.chunk])
        return published

    @contextlib.asynccontextmanager
    async def _producing(self) -> AsyncIterator[None]:
        """Around one chunk's produce calls: room in the producer's queue first, and no
        checkpoint flush under way (a flush waits for every chunk in progress to end)."""
        if self._wait_for_room is not None:
            await self._wait_for_room(*self.room)
        async with self._gate:
            await self._gate.wait_for(lambda: not self._flushing)
            self._publishing += 1
        try:
            yield
        finally:
            async with self._gate:
                self._publishing -= 1
                self._gate.notify_all()

    def _publish_sync(self, window: Window, mapper: Callable[[dict[str, Any]], dict[str, Any]],
                      results: list[dict[str, Any]]) -> int:
        kind, symbol = window.kind, window.symbol
        # CPU time of this thread: other threads and processes share the cores
        t0 = time.thread_time()
        records = []
        mapped = []  # the result each record came from, for a dead letter
        for result in results:
            try:
                records.append(mapper(result))
                mapped.append(result)
            except MappingError as exc:
                self._bad_result(window, result, exc, "mapping")
        if window.kind == "bar" and window.end_ns > (now := self.now_ns()):
            # a bar still running (today's minute or day) would be stored incomplete; the
            # live stream or a later run (today is never checkpointed) brings it whole
            complete = [(r, m) for r, m in zip(records, mapped, strict=True)
                        if r["end_ns"] <= now]
            self.progress.partial_bars += len(records) - len(complete)
            records = [r for r, _ in complete]
            mapped = [m for _, m in complete]
        t1 = time.thread_time()
        encode = self.encoder.encode
        values = []
        for record, result in zip(records, mapped, strict=True):
            try:
                values.append(encode(kind, record))
            except EncodeError as exc:  # a value outside the schema (e.g. an int > 2**63)
                self._bad_result(window, result, exc, "encode")
        t2 = time.thread_time()
        # one call per chunk: the publisher counts (under its lock) once, not per record
        self.sink.produce_many([(kind, symbol, value) for value in values])
        t3 = time.thread_time()
        p = self.progress
        p.map_s += t1 - t0
        p.encode_s += t2 - t1
        p.produce_s += t3 - t2
        p.records += len(values)
        return len(values)

    def _bad_result(self, window: Window, result: Any, exc: Exception, reason: str) -> None:
        """Dead-letter ``result`` (its JSON, the reason, the window), or mark its window as
        failed when there is no dead-letter producer. Runs on a publishing thread."""
        self.progress.bad_results += 1
        if self.dead_letters is None:
            count, first = self._bad.get(window.id, (0, f"{reason}: {exc}"))
            self._bad[window.id] = (count + 1, first)
            return
        # the standard library's encoder: orjson refuses integers beyond 64 bits, which is
        # one of the ways a result goes bad
        value = json.dumps(result, separators=(",", ":"), default=repr).encode()
        self.dead_letters.send(window.symbol, value, exc, reason,
                               {"window": window.id, "kind": window.kind})
        self.progress.dead_letters += 1
        if self.progress.dead_letters <= 20:
            log.warning("REST result sent to the dead-letter topic", extra={
                "window": window.id, "reason": reason, "error": str(exc),
                "topic": self.dead_letters.topic})

    # -- checkpointing -----------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            if self._pending:
                await self._commit()

    async def _commit(self) -> None:
        async with self._gate:
            self._flushing = True
            await self._gate.wait_for(lambda: self._publishing == 0)
            batch, self._pending = self._pending, []
            in_progress = set(self._in_progress)
        try:
            started = time.perf_counter()
            remaining = await asyncio.to_thread(self._flush_all)
            self.progress.flush_s += time.perf_counter() - started
        finally:
            async with self._gate:
                self._flushing = False
                self._gate.notify_all()
        failed = self._failed_total()
        if failed != self._failed_seen:
            # some record produced before this flush was lost: any window that published
            # before now may be incomplete, so none of them is checkpointed
            log.error("Kafka failed to deliver records; affected windows stay unfinished "
                      "and a rerun redoes them",
                      extra={"failed": failed - self._failed_seen, "windows": len(batch)})
            self._failed_seen = failed
            self._tainted.update(wid for wid, _ in batch)
            self._tainted.update(in_progress)
            return
        if remaining:
            self._pending = batch + self._pending  # try again at the next commit
            return
        if self.checkpoint is not None and batch:
            await asyncio.to_thread(self.checkpoint.mark_done, batch)
        self.progress.windows_checkpointed += len(batch)

    def _flush_all(self) -> int:
        """Records and dead letters not yet acknowledged after flushing both."""
        remaining = self.sink.flush(self.flush_timeout_s)
        if self.dead_letters is not None:
            remaining += self.dead_letters.flush(self.flush_timeout_s)
        return remaining

    def _failed_total(self) -> int:
        failed = getattr(self.sink, "failed", 0)
        if self.dead_letters is not None:
            failed += self.dead_letters.failed
        return failed
