"""Run the same call made by many concurrent callers as one batch: one round trip instead of hundreds.

zapq's async processes keep hundreds of operations in flight on one event loop: a sender claims rows, asks the
throttle for slots, journals and records provider answers; the event dispatcher records delivery outcomes; the
webhook edge commits request bodies. Done one by one, those round trips (and their client-side CPU) cost more
than the work itself. A :class:`Coalescer` lets each caller keep its plain ``await claim(id)`` while everything
asked for in the same event-loop turn — and everything asked for while ``max_running`` batches are already in
flight — goes out together.

A batch that raises fails every caller in it with that exception; a caller cancelled while waiting leaves
the batch untouched (its item may still be applied, exactly as if it had been cancelled just after the call).

The two other batchers of zapq are not this one, because their callers are not coroutines awaiting a result:

* the broker's group commit (:class:`libs.redis_broker.GroupCommit`): worker threads hand it acks they never
  wait for and delivery marks they do, and a failed round is written again, not failed;
* the job lifecycle buffer (:class:`libs.middleware.lifecycle.Lifecycle`): Dramatiq hooks on worker threads
  (and on producers without an event loop) append records nobody waits for; a thread writes them every 100 ms
  and drops them when Redis is down — monitoring must never hold a job up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Items per batch: a statement or script over a few hundred ids stays well under a millisecond.
DEFAULT_MAX_BATCH = 256


class Coalescer(Generic[K, V]):
    """Batch calls to ``run(items) -> results`` (one result, or an exception instance, per item, in order).

    ``keep_abandoned``: an item whose caller was cancelled before its batch started is still run (the webhook
    edge: a body handed in is committed whether or not its request is still there to hear about it); by
    default it is left out.
    """

    def __init__(
        self,
        run: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_running: int = 2,
        keep_abandoned: bool = False,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_running = max_running
        self.keep_abandoned = keep_abandoned
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._running = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, item: K) -> V:
        """The result for ``item``, computed in a batch with the other pending items."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._pending.append((item, future))
        self._schedule(loop)
        return await future

    @property
    def busy(self) -> bool:
        """True while items wait or a batch runs."""
        return bool(self._pending) or self._running > 0

    async def drain(self) -> None:
        """Return once every item handed in so far has been run (or failed)."""
        while self.busy:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._pending and self._running < self.max_running:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        if not self.keep_abandoned:
            batch = [(item, future) for item, future in batch if not future.done()]
        loop = asyncio.get_running_loop()
        if batch:
            self._running += 1
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._schedule(loop)

    async def _execute(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
        except BaseException as exc:  # every caller of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        finally:
            self._running -= 1
            self._schedule(asyncio.get_running_loop())
