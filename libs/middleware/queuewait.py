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
import threading
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


def waited(message: Any, now_s: float) -> float:
    """Seconds ``message`` waited until ``now_s`` (from its ``eta`` when it had one, else its enqueue time)."""
    since_ms = message.options.get("eta") or message.message_timestamp
    return max(0.0, now_s - since_ms / 1000)


class QueueWaits:
    """In-process wait counts per queue, taken by each flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._sums: dict[str, float] = {}

    def observe(self, queue: str, seconds: float) -> None:
        """Count one job of ``queue`` that waited ``seconds``."""
        bound = BUCKETS[bisect.bisect_left(BUCKETS, seconds)]
        with self._lock:
            self._counts[f"{queue}|{bucket_label(bound)}"] += 1
            self._counts[f"{queue}|count"] += 1
            self._sums[queue] = self._sums.get(queue, 0.0) + seconds

    def write(self, pipe: Any, keys: LifecycleKeys) -> bool:
        """Add the counts since the last call to ``pipe`` (a Redis pipeline); False when there were none."""
        with self._lock:
            counts, sums = self._counts, self._sums
            self._counts, self._sums = Counter(), {}
        if not counts:
            return False
        for field, count in counts.items():
            pipe.hincrby(keys.queue_waits, field, count)
        for queue, total in sums.items():
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
