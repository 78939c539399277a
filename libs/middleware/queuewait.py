"""Queue wait time: how long each job waited between entering its queue and a worker starting it, per queue.

:class:`~libs.middleware.lifecycle.Lifecycle` observes every start (:meth:`QueueWaits.observe`, in memory, no
I/O) and adds the counts to one Redis hash on its background flush (:meth:`QueueWaits.write`): field
``<queue>|<le>`` per bucket, ``<queue>|sum`` and ``<queue>|count``. ``GET /metrics`` reads it (:func:`read`) as
the histogram ``zapq_queue_wait_seconds{queue}``. Labels are queue names only (a bounded set).

The wait runs from the job's ``eta`` when it had one (a retry, a deferral, a delayed job: it was not due
before), else from its enqueue time (``message_timestamp``), to the start — both on the hosts' clocks.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from typing import Any

from libs.keys import LifecycleKeys

#: Bucket upper bounds (seconds): interactive queues live in the first ones, bulk queues in the last.
BUCKETS: tuple[float, ...] = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    math.inf,
)


def bucket_label(bound: float) -> str:
    """Prometheus ``le`` label of a bucket bound."""
    return "+Inf" if math.isinf(bound) else repr(bound)


_LABELS = tuple(bucket_label(bound) for bound in BUCKETS)


def waited(message: Any, now_s: float) -> float:
    """Seconds ``message`` waited until ``now_s`` (from its ``eta`` when it had one, else its enqueue time)."""
    since_ms = message.options.get("eta") or message.message_timestamp
    return max(0.0, now_s - since_ms / 1000)


class QueueWaits:
    """In-process waits per queue, counted into buckets by each flush (off the job's path).

    :meth:`observe` only appends to a list (atomic under the GIL, no lock): ~0.3 µs per job start. A start
    observed in the instant a flush swaps the list may be missed — monitoring is best effort."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, float]] = []

    def observe(self, queue: str, seconds: float) -> None:
        """Note one job of ``queue`` that waited ``seconds``."""
        self._pending.append((queue, seconds))

    def write(self, pipe: Any, keys: LifecycleKeys) -> bool:
        """Add the waits noted since the last call to ``pipe`` (a Redis pipeline); False when there were none."""
        pending, self._pending = self._pending, []
        if not pending:
            return False
        counts: Counter[tuple[str, int]] = Counter()
        sums: dict[str, float] = {}
        for queue, seconds in pending:
            counts[(queue, bisect.bisect_left(BUCKETS, seconds))] += 1
            sums[queue] = sums.get(queue, 0.0) + seconds
        for (queue, index), count in counts.items():
            pipe.hincrby(keys.queue_waits, f"{queue}|{_LABELS[index]}", count)
        for queue, total in sums.items():
            pipe.hincrby(keys.queue_waits, f"{queue}|count", sum(n for (q, _), n in counts.items() if q == queue))
            pipe.hincrbyfloat(keys.queue_waits, f"{queue}|sum", total)
        return True


async def read(client: Any, namespace: str) -> dict[str, dict[str, Any]]:
    """Every queue's histogram so far: ``{queue: {"buckets": [(le, cumulative)], "sum", "count"}}``."""
    raw: dict[bytes, bytes] = await client.hgetall(LifecycleKeys(namespace).queue_waits)
    per_queue: dict[str, dict[str, float]] = {}
    for field, value in raw.items():
        queue, what = field.decode().rsplit("|", 1)
        per_queue.setdefault(queue, {})[what] = float(value)
    out: dict[str, dict[str, Any]] = {}
    for queue, values in sorted(per_queue.items()):
        cumulative, buckets = 0, []
        for bound in BUCKETS:
            cumulative += int(values.get(bucket_label(bound), 0))
            buckets.append((bucket_label(bound), cumulative))
        out[queue] = {"buckets": buckets, "sum": values.get("sum", 0.0), "count": int(values.get("count", 0))}
    return out
