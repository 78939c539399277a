"""Worker module of the clock-skew test: zapq's broker in a process whose wall clock is off by a fixed offset.

Run as ``python -m dramatiq tests.middleware.skew_app -p1 -t1 -Q test-skew`` with ``SKEW_SECONDS`` set (e.g.
``-60``: this host's clock is a minute behind). ``time.time`` is replaced before anything else is imported, so
every part of the process (Dramatiq's timestamps, zapq's middleware) sees the skewed clock, as on a host whose
clock drifted. At import the process notes the broker id it heartbeats under, so the test can find its ack set.
"""

from __future__ import annotations

import os
import time

_OFFSET_S = float(os.environ.get("SKEW_SECONDS", "0"))
_real_time = time.time


def _skewed_time() -> float:
    return _real_time() + _OFFSET_S


time.time = _skewed_time

import dramatiq  # noqa: E402

from services.scheduler import broker, settings  # noqa: E402

QUEUE = "test-skew"
KEYS = f"{settings.redis_namespace}:{QUEUE}"

broker.client.rpush(f"{KEYS}:broker-ids", broker.broker_id)


@dramatiq.actor(actor_name="test_skew_slow", queue_name=QUEUE, broker=broker, time_limit=120_000)
def slow(seconds: float) -> None:
    """Note the run, then hold the worker thread for ``seconds`` (longer than the heartbeat timeout)."""
    broker.client.rpush(f"{KEYS}:runs", os.getpid())
    time.sleep(seconds)
    broker.client.rpush(f"{KEYS}:done", os.getpid())
