"""MarketStore I/O for the consumer: multi-bucket writes, range and tail queries, destroy.

pymarketstore's ``Client.write`` sends one bucket per RPC; here one ``DataService.Write`` call
carries a whole batch: one request per column layout (OHLCV fixed, TRADE and QUOTE variable),
each request one dataset whose ``startindex``/``lengths`` maps slice it into many buckets.
The server reports failures per request inside a successful reply (``responses``, each with
``error``); every item is checked and any error raises :class:`MarketStoreError`, as does any
transport failure, so the caller can rewind and retry.

What the server does with a write (v4.1.23, read in executor/writer.go and wal.go, and seen
with kill -9 here): ``WriteCSM`` queues the rows and calls ``RequestFlush``, which waits for
the WAL writer to fsync the WAL and then write the primary files; so a single writer's reply
normally comes after the data is durable. It returns early when another flush is already
queued (several writers), so durability is confirmed by reading a written row back (rows are
visible only once their WAL transaction group has been written). After a kill -9 the server
replays every transaction group since its last checkpoint (every 5 minutes): fixed-length rows
are rewritten in place (harmless) but variable-length rows are appended again, i.e.
duplicated; see ``consumer.sink`` for how the consumer repairs that.
"""

from __future__ import annotations

import select
import socket
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlparse

import msgpack
import numpy as np
import requests
from pymarketstore.jsonrpc import MsgpackRpcClient

from consumer.buckets import KEY_CATEGORY, VARIABLE, attr_group, column_names
from consumer.tornread import read_whole

# how the server says "no such bucket" (an answer, not a failure)
_MISSING = ("no files returned from query parse", "not in catalog")


class MarketStoreError(Exception):
    """MarketStore could not be reached or refused a request; retry after a back-off."""


class _TimeoutRpcClient(MsgpackRpcClient):
    """pymarketstore's msgpack RPC client with a request timeout (it has none)."""

    def __init__(self, endpoint: str, timeout_s: float) -> None:
        super().__init__(endpoint)
        self._timeout_s = timeout_s

    def _rpc_request(self, method: str, **query: object) -> dict:
        self._id += 1
        http_resp = self._session.post(
            self._endpoint,
            data=msgpack.dumps({"method": method, "id": str(self._id), "jsonrpc": "2.0",
                                "params": query}),
            headers={"Content-Type": self.mimetype}, timeout=self._timeout_s)
        http_resp.raise_for_status()
        return msgpack.loads(http_resp.content)


def _full_key(tbk: str) -> str:
    return f"{tbk}:{KEY_CATEGORY}"


# (attribute group, rows of many buckets, {bucket: (start, length)} slicing them)
WriteGroup = tuple[str, np.ndarray, Mapping[str, tuple[int, int]]]


def group_buckets(buckets: Mapping[str, np.ndarray]) -> list[WriteGroup]:
    """Per-bucket arrays -> one concatenated array per column layout plus its slices."""
    by_attr: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    for tbk, array in buckets.items():
        if len(array):
            by_attr[attr_group(tbk)].append((tbk, array))
    out: list[WriteGroup] = []
    for attr, items in by_attr.items():
        arrays = [a for _, a in items]
        allrows = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        slices, pos = {}, 0
        for tbk, array in items:
            slices[tbk] = (pos, len(array))
            pos += len(array)
        out.append((attr, allrows, slices))
    return out


def split_groups(groups: Sequence[WriteGroup], max_buckets: int) -> list[list[WriteGroup]]:
    """``groups`` cut into calls of at most ``max_buckets`` buckets each, in order.

    MarketStore creates a new bucket's files inside the Write call, so a day's first batch
    over thousands of new symbols is one call that can outlast any client timeout; several
    smaller calls each answer in time. A call that fails leaves the earlier ones written,
    which the sink already handles after any error (tails are read again, so only missing
    rows are appended)."""
    calls: list[list[WriteGroup]] = [[]]
    room = max_buckets
    for attr, rows, slices in groups:
        items = list(slices.items())
        while items:
            if room == 0:
                calls.append([])
                room = max_buckets
            take, items = items[:room], items[room:]
            room -= len(take)
            lo = take[0][1][0]
            hi = take[-1][1][0] + take[-1][1][1]
            calls[-1].append((attr, rows[lo:hi], {t: (st - lo, n) for t, (st, n) in take}))
    return [c for c in calls if c]


def build_write_requests(groups: Iterable[WriteGroup]) -> list[dict]:
    """The ``requests`` list of one DataService.Write call: one request per column layout."""
    out = []
    for attr, allrows, slices in groups:
        names = list(column_names(allrows.dtype))
        out.append({
            "dataset": {
                "types": [allrows.dtype[n].str.lstrip("<|") for n in names],
                "names": names,
                "data": [np.ascontiguousarray(allrows[n]).tobytes() for n in names],
                "length": len(allrows),
                "startindex": {_full_key(t): st for t, (st, _n) in slices.items()},
                "lengths": {_full_key(t): n for t, (_st, n) in slices.items()},
            },
            "is_variable_length": VARIABLE[attr],
        })
    return out


# Buckets per DataService.Write call (see split_groups).
MAX_BUCKETS_PER_WRITE = 1000

# Requests per DataService.Query call in :meth:`MarketStoreWriter.query_ranges`: the server
# answers a call only once every request in it is read, so this bounds one reply's size.
RANGES_PER_CALL = 256


def _time_params(start_ns: int | None, end_ns: int | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if start_ns is not None:
        out["epoch_start"], nanos = divmod(max(start_ns, 0), 1_000_000_000)
        if nanos:
            out["epoch_start_nanos"] = nanos
    if end_ns is not None:
        out["epoch_end"], nanos = divmod(end_ns, 1_000_000_000)
        if nanos:
            out["epoch_end_nanos"] = nanos
    return out


class MarketStoreWriter:
    def __init__(self, url: str, timeout_s: float = 30.0,
                 max_buckets_per_write: int = MAX_BUCKETS_PER_WRITE) -> None:
        self.url = url
        self.max_buckets_per_write = max_buckets_per_write
        self._rpc = _TimeoutRpcClient(url, timeout_s)
        self.rows_read = 0  # by every query, for tests and benchmarks of read costs

    def _call(self, method: str, **params: object) -> dict:
        try:
            return self._rpc.call(method, **params)
        except (requests.RequestException, OSError, msgpack.UnpackException) as exc:
            raise MarketStoreError(f"{method} failed: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # pymarketstore raises bare Exception for RPC errors
            raise MarketStoreError(f"{method} failed: {exc}") from exc

    def _read(self, reqs: list[dict[str, object]]) -> dict:
        """One DataService.Query call, read again while the server answers a torn block."""
        return read_whole(lambda: self._call("DataService.Query", requests=reqs))

    def write(self, buckets: Mapping[str, np.ndarray]) -> int:
        """Write many buckets (one array each) in one RPC; returns the number of rows sent."""
        return self.write_groups(group_buckets(buckets))

    def write_groups(self, groups: Sequence[WriteGroup]) -> int:
        """Write prepared layout groups, ``max_buckets_per_write`` buckets per RPC at most;
        returns the number of rows sent."""
        if sum(len(g[2]) for g in groups) <= self.max_buckets_per_write:
            return self.write_requests(build_write_requests(groups))
        return sum(self.write_requests(build_write_requests(call))
                   for call in split_groups(groups, self.max_buckets_per_write))

    def write_requests(self, reqs: list[dict]) -> int:
        """Send a prepared ``requests`` list; check every item of the reply."""
        if not reqs:
            return 0
        reply = self._call("DataService.Write", requests=reqs)
        errors = [r.get("error") for r in (reply or {}).get("responses") or [] if r.get("error")]
        if errors:
            raise MarketStoreError(f"DataService.Write: {len(errors)} request(s) failed: "
                                   + "; ".join(errors[:3]))
        return sum(r["dataset"]["length"] for r in reqs)

    def query(self, tbks: Iterable[str], start_ns: int | None = None,
              end_ns: int | None = None, limit: int | None = None,
              from_start: bool = True, columns: Iterable[str] | None = None,
              ) -> dict[str, np.ndarray]:
        """Rows of several buckets (time range in ns, inclusive; limit per bucket; only
        ``columns`` and the index columns, when given).

        Buckets sharing a timeframe and attribute group go in one request; a bucket that does
        not exist is simply absent from the result.
        """
        groups: dict[str, list[str]] = defaultdict(list)
        for tbk in tbks:
            symbol, rest = tbk.split("/", 1)
            groups[rest].append(symbol)
        out: dict[str, np.ndarray] = {}
        for rest, symbols in groups.items():
            req: dict[str, object] = {"destination": f"{','.join(symbols)}/{rest}",
                                      **_time_params(start_ns, end_ns)}
            if limit is not None:
                req["limit_record_count"] = int(limit)
                req["limit_from_start"] = from_start
            if columns is not None:
                req["columns"] = list(columns)
            try:
                reply = self._read([req])
            except MarketStoreError as exc:
                if any(m in str(exc) for m in _MISSING):
                    continue
                raise
            for response in reply.get("responses") or []:
                found = _decode(response["result"])
                self.rows_read += sum(len(a) for a in found.values())
                out.update(found)
        return out

    def query_ranges(self, ranges: Iterable[tuple[str, int, int]],
                     columns: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Rows of (bucket, first ns, last ns) ranges, a bucket's ranges concatenated in the
        order given; few calls (:data:`RANGES_PER_CALL` requests each).

        ``columns``: only these (and the index columns ``Epoch``, ``Nanoseconds``) are sent
        back. Every bucket must exist: the server fails the whole call for a missing one.
        """
        cols = list(columns) if columns is not None else None
        reqs = []
        for tbk, start_ns, end_ns in ranges:
            req: dict[str, object] = {"destination": tbk, **_time_params(start_ns, end_ns)}
            if cols:
                req["columns"] = cols
            reqs.append(req)
        parts: dict[str, list[np.ndarray]] = defaultdict(list)
        for i in range(0, len(reqs), RANGES_PER_CALL):
            reply = self._read(reqs[i:i + RANGES_PER_CALL])
            for response in reply.get("responses") or []:
                for tbk, rows in _decode(response["result"]).items():
                    self.rows_read += len(rows)
                    parts[tbk].append(rows)
        return {tbk: a[0] if len(a) == 1 else np.concatenate(a) for tbk, a in parts.items()}

    def destroy(self, tbk: str) -> None:
        reply = self._call("DataService.Destroy", requests=[{"key": tbk}])
        errors = [r.get("error") for r in (reply or {}).get("responses") or [] if r.get("error")]
        if errors:
            raise MarketStoreError(f"DataService.Destroy {tbk}: {errors[0]}")

    def list_buckets(self) -> list[str]:
        reply = self._call("DataService.ListSymbols", format="tbk")
        return list(reply.get("Results") or [])

    def close(self) -> None:
        """Close the HTTP connections (the writer reconnects if used again)."""
        self._rpc._session.close()

    def ping(self) -> None:
        """Raises MarketStoreError unless the server answers (a query of a bucket never made)."""
        self.query(["PING-0/1Min/OHLCV"], limit=1)


class ServerWatch:
    """Notices a MarketStore restart even when no request failed.

    A restart after a kill -9 duplicates recent variable-length rows (WAL replay) and may happen
    while the consumer is idle, so no write ever fails. This keeps one idle TCP connection to
    the server (it sends nothing; the server keeps idle connections open): when the server
    process ends, the kernel closes it and the socket turns readable with EOF.
    """

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self._address = (parsed.hostname or "127.0.0.1", parsed.port or 5993)
        self._sock: socket.socket | None = None

    def restarted(self) -> bool:
        """True once after the server went away (since the last call that returned False)."""
        if self._sock is None:
            try:
                self._sock = socket.create_connection(self._address, timeout=2)
            except OSError:
                return False  # down now: requests fail and say so
            return False
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return False
            gone = self._sock.recv(1) == b""
        except OSError:
            gone = True
        if gone:
            self.close()
        return gone

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _decode(packed: dict | None) -> dict[str, np.ndarray]:
    if not packed:  # a range without rows
        return {}
    names, types = packed["names"], packed["types"]
    dtype = np.dtype([(n, "<" + t if t[0] in "iuf" else t) for n, t in zip(names, types,
                                                                          strict=True)])
    length = packed["length"]
    array = np.empty(length, dtype=dtype)
    for i, name in enumerate(names):
        array[name] = np.frombuffer(packed["data"][i], dtype=dtype[i], count=length)
    out = {}
    for key, start in packed["startindex"].items():
        out[key.split(":")[0]] = array[start:start + packed["lengths"][key]]
    return out
