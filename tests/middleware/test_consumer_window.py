"""zapq's Redis consumer: the prefetch window per queue, and a full window refilled as soon as half is acked."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq

from libs import contracts
from libs.dramatiq_ext import FULL_WINDOW_WAIT_S, MIN_PREFETCH


def test_short_job_queues_get_a_large_window_and_long_job_queues_keep_dramatiqs(broker: Any) -> None:
    assert broker.consume(contracts.WEBHOOKS, prefetch=16).prefetch == MIN_PREFETCH
    assert broker.consume(contracts.MESSAGES, prefetch=1024).prefetch == 1024
    assert broker.consume(contracts.CAMPAIGNS, prefetch=16).prefetch == 16
    assert broker.consume(contracts.MAINTENANCE, prefetch=4).prefetch == 4


def test_full_window_is_refilled_by_acks_not_by_a_timer(broker: Any) -> None:
    # Given 8 jobs waiting and a consumer whose window of 4 is full
    @dramatiq.actor(queue_name=contracts.CAMPAIGNS, actor_name="zq_window_probe")
    def probe(n: int) -> None: ...

    try:
        for n in range(8):
            probe.send(n)
        consumer = broker.consume(contracts.CAMPAIGNS, prefetch=4, timeout=100)
        held = [next(consumer) for _ in range(4)]
        assert all(m is not None for m in held)

        # When another thread acks half of them while the consumer waits for room
        def ack_half() -> None:
            time.sleep(0.02)  # most likely the consumer waits by now (if not, it finds room at once: same result)
            for message in held[:2]:
                consumer.ack(message)

        acker = threading.Thread(target=ack_half)
        started = time.monotonic()
        acker.start()
        refill = next(consumer)
        waited = time.monotonic() - started
        acker.join()
        # Then it fetched the next job at once, well before its fallback timer
        assert refill is not None and refill.args == (4,)
        assert waited < FULL_WINDOW_WAIT_S, waited
        consumer.close()
    finally:
        broker.actors.pop("zq_window_probe", None)


def test_an_empty_urgent_queue_is_looked_at_again_within_its_idle_poll(broker: Any) -> None:
    # Given consumers of an empty urgent queue and of an empty campaign queue, each after many empty fetches
    # (Dramatiq's back-off doubles with each miss, up to the worker timeout: 1 s)
    urgent = broker.consume(contracts.MESSAGES_URGENT, prefetch=1, timeout=1000)
    slow = broker.consume(contracts.CAMPAIGNS, prefetch=1, timeout=1000)
    try:
        assert urgent.max_idle_ms == contracts.IDLE_POLL_MS[contracts.MESSAGES_URGENT] == 50
        assert contracts.IDLE_POLL_MS[contracts.WEBHOOKS] == 25  # the first hop of an inbound message's event
        assert slow.max_idle_ms == 1000
        for consumer in (urgent, slow):
            consumer.misses = 20
        # When each finds its queue empty once more
        started = time.monotonic()
        assert next(urgent) is None
        urgent_pause = time.monotonic() - started
        started = time.monotonic()
        assert next(slow) is None
        slow_pause = time.monotonic() - started
        # Then the urgent consumer paused at most its idle poll (a message enqueued then waits no longer),
        # while the other kept Dramatiq's long back-off
        assert urgent_pause < 0.05 + 0.05, urgent_pause
        assert slow_pause >= 0.5, slow_pause  # 0.5–1 s: Dramatiq jitters it
    finally:
        urgent.close()
        slow.close()
