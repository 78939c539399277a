"""The batching primitive: many awaiting callers, one call (``libs/batching.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

from libs.batching import Coalescer


class Recorder:
    """A batch function that records the batches it was given."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[Any]] = []
        self.fail_on = fail_on
        self.release = asyncio.Event()
        self.hold = False

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if self.hold:
            await self.release.wait()
        if self.fail_on == "batch":
            raise ConnectionError("database gone")
        return [ValueError(f"bad {i}") if i == self.fail_on else i * 10 for i in items]


class TestCoalescer:
    def test_calls_made_in_one_turn_go_in_one_batch(self) -> None:
        async def run() -> tuple[list[Any], Recorder]:
            recorder = Recorder()
            coalescer = Coalescer(recorder)
            return list(await asyncio.gather(*(coalescer(i) for i in range(5)))), recorder

        results, recorder = asyncio.run(run())
        assert results == [0, 10, 20, 30, 40]
        assert recorder.batches == [[0, 1, 2, 3, 4]]

    def test_calls_made_while_batches_run_go_together_in_the_next(self) -> None:
        async def run() -> Recorder:
            recorder = Recorder()
            recorder.hold = True
            coalescer = Coalescer(recorder, max_running=1, max_batch=3)
            first = [asyncio.ensure_future(coalescer(i)) for i in range(2)]
            await asyncio.sleep(0)  # the first batch starts and waits
            await asyncio.sleep(0)
            later = [asyncio.ensure_future(coalescer(i)) for i in range(2, 7)]
            await asyncio.sleep(0)
            assert len(recorder.batches) == 1  # the others wait for the running batch
            recorder.release.set()
            assert await asyncio.gather(*first, *later) == [0, 10, 20, 30, 40, 50, 60]
            return recorder

        recorder = asyncio.run(run())
        assert recorder.batches == [[0, 1], [2, 3, 4], [5, 6]]  # max_batch 3

    def test_an_item_error_reaches_its_caller_only(self) -> None:
        async def run() -> list[Any]:
            coalescer = Coalescer(Recorder(fail_on=2))
            return list(await asyncio.gather(*(coalescer(i) for i in range(4)), return_exceptions=True))

        results = asyncio.run(run())
        assert results[:2] == [0, 10] and results[3] == 30
        assert isinstance(results[2], ValueError) and str(results[2]) == "bad 2"

    def test_a_failed_batch_fails_every_caller_and_the_next_batch_runs(self) -> None:
        async def run() -> tuple[list[Any], Any]:
            recorder = Recorder(fail_on="batch")
            coalescer = Coalescer(recorder)
            failed = await asyncio.gather(*(coalescer(i) for i in range(3)), return_exceptions=True)
            recorder.fail_on = None
            return list(failed), await coalescer(7)

        failed, after = asyncio.run(run())
        assert all(isinstance(e, ConnectionError) for e in failed) and len(failed) == 3
        assert after == 70

    def test_a_cancelled_caller_leaves_the_others_alone(self) -> None:
        async def run() -> list[Any]:
            recorder = Recorder()
            recorder.hold = True
            coalescer = Coalescer(recorder)
            calls = [asyncio.ensure_future(coalescer(i)) for i in range(3)]
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            calls[1].cancel()
            recorder.release.set()
            return list(await asyncio.gather(*calls, return_exceptions=True))

        results = asyncio.run(run())
        assert results[0] == 0 and results[2] == 20
        assert isinstance(results[1], asyncio.CancelledError)

    def test_an_abandoned_item_is_still_run_when_asked_to(self) -> None:
        async def run() -> tuple[list[Any], Recorder]:
            # Given a coalescer that keeps abandoned items, with one batch running
            recorder = Recorder()
            recorder.hold = True
            coalescer = Coalescer(recorder, max_running=1, keep_abandoned=True)
            running = asyncio.ensure_future(coalescer(0))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            # When a caller of the next batch is cancelled before that batch starts
            waiting = [asyncio.ensure_future(coalescer(i)) for i in (1, 2)]
            await asyncio.sleep(0)
            waiting[0].cancel()
            recorder.release.set()
            results = list(await asyncio.gather(running, *waiting, return_exceptions=True))
            return results, recorder

        results, recorder = asyncio.run(run())
        # Then its item is run all the same, and the others get their results
        assert recorder.batches == [[0], [1, 2]]
        assert results[0] == 0 and isinstance(results[1], asyncio.CancelledError) and results[2] == 20

    def test_an_abandoned_item_is_left_out_by_default(self) -> None:
        async def run() -> Recorder:
            recorder = Recorder()
            recorder.hold = True
            coalescer = Coalescer(recorder, max_running=1)
            running = asyncio.ensure_future(coalescer(0))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            waiting = [asyncio.ensure_future(coalescer(i)) for i in (1, 2)]
            await asyncio.sleep(0)
            waiting[0].cancel()
            recorder.release.set()
            await asyncio.gather(running, *waiting, return_exceptions=True)
            return recorder

        assert asyncio.run(run()).batches == [[0], [2]]

    def test_drain_returns_once_everything_handed_in_has_run(self) -> None:
        async def run() -> tuple[bool, Recorder]:
            # Given items handed in and not awaited, one batch held
            recorder = Recorder()
            recorder.hold = True
            coalescer = Coalescer(recorder, max_running=1, max_batch=2)
            calls = [asyncio.ensure_future(coalescer(i)) for i in range(5)]
            await asyncio.sleep(0)
            assert coalescer.busy
            # When the batch is released and the coalescer drained
            recorder.release.set()
            await coalescer.drain()
            # Then every item has run
            done = all(call.done() for call in calls) and not coalescer.busy
            return done, recorder

        done, recorder = asyncio.run(run())
        assert done and recorder.batches == [[0, 1], [2, 3], [4]]
