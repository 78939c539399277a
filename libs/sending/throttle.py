"""Per-connection send throttling shared by every worker process, plus the per-recipient pair limit.

One Lua call implements both, atomically, in Redis, on Redis's clock (``TIME``), so workers on
different hosts share one schedule:

* **Connection rate** (default 80/s): a GCRA admitting a send *now* when it conforms — at most
  ``burst_ms`` ahead of the schedule (``TAT``) — and otherwise answering how long to wait. A send admitted
  late does not earn a catch-up burst (``TAT`` restarts from now); the caller wakes ``burst_ms / 2`` early
  so ordinary lateness costs no throughput. Behind it, a log of the admissions of the last
  ``1 s + slack`` (a sorted set) admits at most ``rate`` sends in it, so even with that much network jitter
  Meta never sees more than ``rate`` sends in any 1-s window (slack: ``window_slack_ms``, or up to one send
  interval, at most ``MAX_SLACK_MS``, for slow numbers).
* **Pair rate** (Meta: ~1 message / 6 s to one user, bursts up to 45): a GCRA with burst tolerance; when
  exceeded the send is deferred (no attempt consumed) and takes no connection slot.
* **Pair back-off** (Meta 131056): the provider's refusals of a connection + recipient in a row are counted
  (:meth:`Throttle.pair_refused`); the send goes back with a ``4**X`` s back-off (X: the refusals before it,
  handed to the provider client as ``pair_hits``), and every other send to that pair is held as long, so
  the count grows only with real refusals. A send accepted afterwards starts the pair over at X = 0.

In each process, the sends waiting for one connection line up behind a :class:`PriorityGate` (urgent
first), so only the head of the line polls Redis; the heads of all connections' lines that ask in the same
event-loop turn share one script call. A send that waited ``max_hold_ms`` without a slot gives
its place back and is deferred, so one busy number cannot hold every in-flight slot of the process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from libs import lua
from libs.batching import Coalescer
from libs.errors import RateLimited
from libs.keys import ThrottleKeys

logger = logging.getLogger(__name__)

#: Reservations for many sends in one call, in order (``libs/lua/throttle_reserve.lua``).
RESERVE = lua.source("throttle_reserve")
#: The provider refused a send to a pair (``libs/lua/throttle_refused.lua``).
REFUSED = lua.source("throttle_refused")

GRANTED, PAIR_LIMITED, FULL, WAIT = 0, 1, 2, 3
#: Longest extra window of the admission log. A slow number (10/s) gets up to one interval of slack: one send
#: too many is +10 % there, so network and event-loop jitter must be covered in full; a fast one (80/s) can
#: absorb a send of jitter within its 5 % and keeps ``window_slack_ms``, so it loses no throughput.
MAX_SLACK_MS = 100


@dataclass(frozen=True, slots=True)
class ThrottleConfig:
    """Throttle knobs (the rate itself is per connection)."""

    burst_ms: int = 25
    window_slack_ms: int = 25
    horizon_ms: int = 1_000
    max_hold_ms: int = 5_000
    pair_interval_ms: int = 6_000
    pair_burst: int = 45
    #: A pair's refusal count outlives its back-off by as long again plus this; quieter pairs start over.
    pair_backoff_grace_ms: int = 60_000


class PriorityGate:
    """An asyncio lock per key whose waiters are served by priority, then arrival (lower first)."""

    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._waiters: dict[str, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()

    @asynccontextmanager
    async def turn(self, key: str, priority: int, timeout: float) -> AsyncIterator[None]:
        """Hold ``key`` exclusively; raise ``TimeoutError`` when not served within ``timeout`` s."""
        if key in self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (priority, next(self._order), future)
            heapq.heappush(self._waiters.setdefault(key, []), entry)
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout)
            except BaseException:  # timed out or cancelled while waiting: never leave the turn with a ghost
                if future.done() and not future.cancelled():  # served at the last moment: pass it on
                    self._release(key)
                else:
                    future.cancel()
                raise
        else:
            self._busy.add(key)
        try:
            yield
        finally:
            self._release(key)

    def _release(self, key: str) -> None:
        waiters = self._waiters.get(key, [])
        while waiters:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(None)  # the turn passes straight to this waiter
                return
        self._waiters.pop(key, None)
        self._busy.discard(key)


class Throttle:
    """Reserve send slots for a connection (and recipient) in Redis; sleep until the slot."""

    def __init__(self, client: aioredis.Redis, namespace: str, config: ThrottleConfig | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.names = ThrottleKeys(namespace)
        self.config = config or ThrottleConfig()
        self.gate = PriorityGate()
        self._script = client.register_script(RESERVE)
        self._refused = client.register_script(REFUSED)
        #: Reservations asked for in the same event-loop turn share one script call.
        self._reservations: Coalescer[tuple[int, str, float], tuple[int, int, int]] = Coalescer(self._reserve_many)

    def keys(self, connection_id: int, recipient: str) -> list[str]:
        """Redis keys of the connection schedule, of the pair limit, of the admission log and of the pair back-off."""
        return [
            self.names.connection(connection_id),
            self.names.pair(connection_id, recipient),
            self.names.admissions(connection_id),
            self.names.pair_refusals(connection_id, recipient),
        ]

    async def reserve(self, connection_id: int, recipient: str, rate_per_second: float) -> tuple[int, int, int]:
        """One attempt: ``(GRANTED, 0, pair_hits)`` (send now), ``(WAIT, ms, 0)`` until the next slot,
        ``(PAIR_LIMITED, ms, 0)`` or ``(FULL, ms, 0)`` (the next slot is beyond the horizon)."""
        return await self._reservations((connection_id, recipient, rate_per_second))

    async def _reserve_many(self, requests: list[tuple[int, str, float]]) -> list[tuple[int, int, int]]:
        keys: list[str] = []
        args: list[float] = [
            self.config.burst_ms,
            self.config.horizon_ms,
            self.config.pair_interval_ms,
            self.config.pair_burst,
        ]
        for connection_id, recipient, rate_per_second in requests:
            interval = 1000.0 / max(rate_per_second, 0.001)
            keys += self.keys(connection_id, recipient)
            args += [
                interval,
                max(1, int(rate_per_second)),
                1000 + max(self.config.window_slack_ms, min(MAX_SLACK_MS, interval)),
            ]
        flat = await self._script(keys=keys, args=args)
        return [(int(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def acquire(self, connection_id: int, recipient: str, rate_per_second: float, priority: int) -> int:
        """Return when this send may leave, with the pair's provider refusals in a row so far (``pair_hits``);
        raise :class:`RateLimited` (a deferral) when it cannot soon."""
        hold_s = self.config.max_hold_ms / 1000
        deadline = time.monotonic() + hold_s
        early_s = self.config.burst_ms / 2000  # wake a little before the slot: lateness then costs nothing
        try:
            async with self.gate.turn(str(connection_id), priority, hold_s):
                while True:
                    code, ms, pair_hits = await self.reserve(connection_id, recipient, rate_per_second)
                    if code == GRANTED:
                        return pair_hits
                    if code == PAIR_LIMITED:
                        raise RateLimited(ms, "recipient pair rate limit")
                    if code == FULL or time.monotonic() + ms / 1000 > deadline:
                        raise RateLimited(ms + self.config.horizon_ms, "connection send rate limit")
                    await asyncio.sleep(max(0.0, ms / 1000 - early_s))
        except TimeoutError:
            raise RateLimited(self.config.horizon_ms, "connection send rate limit (queued in process)") from None

    async def pair_refused(self, connection_id: int, recipient: str, pair_hits: int, delay_ms: int) -> None:
        """Count the provider's refusal of a send made with ``pair_hits`` and hold the pair for ``delay_ms``.

        Best effort: without Redis the refused send is deferred all the same, only its successor backs off less.
        """
        key = self.keys(connection_id, recipient)[3]
        try:
            await self._refused(keys=[key], args=[pair_hits, delay_ms, self.config.pair_backoff_grace_ms])
        except redis.RedisError as exc:
            logger.warning("pair back-off of connection %s not counted: %s", connection_id, type(exc).__name__)

    async def pair_accepted(self, connection_id: int, recipient: str) -> None:
        """The provider accepted a send to a pair it had refused: the next refusal starts over at X = 0.

        Best effort: the count expires on its own.
        """
        try:
            await self.client.delete(self.keys(connection_id, recipient)[3])
        except redis.RedisError as exc:
            logger.warning("pair back-off of connection %s not reset: %s", connection_id, type(exc).__name__)
