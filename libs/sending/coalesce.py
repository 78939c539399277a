"""Run the same call made by many concurrent sends as one batch: one round trip instead of hundreds.

A sender process keeps hundreds of sends in flight on one event loop. Each of them claims its row, asks the
throttle for a slot and records the provider's answer; done one by one, those round trips (and their
client-side CPU) cost more than the provider call itself. A :class:`Coalescer` lets each send keep its plain
``await claim(id)`` while everything asked for in the same event-loop turn — and everything asked for while
``max_running`` batches are already in flight — goes out together.

A batch that raises fails every caller in it with that exception; a caller cancelled while waiting leaves
the batch untouched (its item may still be applied, exactly as if it had been cancelled just after the call).
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
    """Batch calls to ``run(items) -> results`` (one result, or an exception instance, per item, in order)."""

    def __init__(
        self,
        run: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_running: int = 2,
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_running = max_running
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

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._pending and self._running < self.max_running:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
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
