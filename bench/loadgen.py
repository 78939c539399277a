"""A closed-loop HTTP/1.1 load generator on raw asyncio streams (uvloop when installed).

``concurrency`` keep-alive connections each send the next pre-built request as soon as the previous answer
is read. Requests are built before the clock starts, so the generator spends its time on the socket, not
on JSON or HMAC; httpx is not used because its connection pool is the bottleneck under concurrency (see
``docs/dramatiq-notes.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """What one load run saw; latencies in seconds, ``started``/``finished`` on ``time.time()``."""

    requests: int
    started: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    timed_out: bool = False

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def rate(self) -> float:
        """2xx answers per second over the whole run."""
        elapsed = self.finished - self.started
        return self.ok / elapsed if elapsed > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        """The ``p`` (0..1) latency percentile in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered)) - 1))] * 1000


def build_request(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one ``POST url`` with ``body``."""
    parts = urlsplit(url)
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, close = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _connection(host: str, port: int, requests: Iterator[bytes], result: LoadResult) -> None:
    writer: asyncio.StreamWriter | None = None
    try:
        for request in requests:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            try:
                writer.write(request)
                status, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                result.errors += 1
                writer.close()
                writer = None
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _run(url: str, requests: Sequence[bytes], concurrency: int, timeout: float) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = LoadResult(requests=len(requests))
    shared = iter(requests)  # one iterator: each connection takes the next request (single-threaded loop)
    result.started = time.time()
    tasks = [asyncio.ensure_future(_connection(host, port, shared, result)) for _ in range(concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    result.finished = time.time()
    if pending:
        result.timed_out = True
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            result.errors += 1
    return result


def post_all(url: str, requests: Sequence[bytes], *, concurrency: int, timeout: float) -> LoadResult:
    """Send every pre-built request to ``url``'s host over ``concurrency`` connections; bounded by ``timeout``."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dev dependency
        return asyncio.run(_run(url, requests, concurrency, timeout))
    return uvloop.run(_run(url, requests, concurrency, timeout))


@dataclass
class PacedResult(LoadResult):
    """A paced run: per request (in order) the time its answer was read (``time.time()``, ``None``: failed)."""

    answered_at: list[float | None] = field(default_factory=list)


async def _paced(url: str, requests: Sequence[bytes], rate: float, concurrency: int, timeout: float) -> PacedResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = PacedResult(requests=len(requests), answered_at=[None] * len(requests))
    due: asyncio.Queue[int | None] = asyncio.Queue()

    async def pacer() -> None:
        start = time.perf_counter()
        for index in range(len(requests)):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due.put_nowait(index)
        for _ in range(concurrency):
            due.put_nowait(None)

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while (index := await due.get()) is not None:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            started = time.perf_counter()
            try:
                writer.write(requests[index])
                status, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                result.errors += 1
                writer.close()
                writer = None
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1
            if 200 <= status < 300:
                result.answered_at[index] = time.time()
            if close:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    result.started = time.time()
    tasks = [asyncio.ensure_future(pacer())] + [asyncio.ensure_future(connection()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    result.finished = time.time()
    if pending:
        result.timed_out = True
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return result


def post_paced(url: str, requests: Sequence[bytes], *, rate: float, concurrency: int, timeout: float) -> PacedResult:
    """Send the pre-built requests at ``rate`` per second (an open loop: request i is due at i / rate s, on the
    first free of ``concurrency`` connections); bounded by ``timeout``."""
    import uvloop

    return uvloop.run(_paced(url, requests, rate, concurrency, timeout))
