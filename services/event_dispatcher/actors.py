"""Actors of the event dispatcher (queue ``event-delivery``): an endpoint's pump, and replays.

Both are ``concurrent``: one worker thread runs many pumps on the event loop, each with many deliveries in
flight. Their own retries are not needed (a pump that cannot run leaves its deliveries in Postgres for the
next kick or the sweep), so they take one attempt.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from libs import contracts
from libs.events import dispatch
from libs.middleware.policy import RetryPolicy
from services.event_dispatcher import dispatcher

#: A pump works for a slice (30 s) plus the last requests' timeout.
PUMP_TIME_LIMIT_MS = 120_000
ONE_ATTEMPT = RetryPolicy(attempts=1, kind="fixed", base_ms=1000)
OPTIONS: dict[str, Any] = {"concurrent": True, "retry_policy": ONE_ATTEMPT}


@dramatiq.actor(
    actor_name=contracts.DELIVER_EVENTS.actor_name,
    queue_name=contracts.DELIVER_EVENTS.queue_name,
    time_limit=PUMP_TIME_LIMIT_MS,
    **OPTIONS,
)
async def deliver_events(endpoint_id: int) -> None:
    """Deliver one endpoint's due events (its pump)."""
    await dispatch.pump(await dispatcher.context(), endpoint_id)


@dramatiq.actor(
    actor_name=contracts.REDELIVER_EVENT.actor_name,
    queue_name=contracts.REDELIVER_EVENT.queue_name,
    time_limit=30_000,
    concurrent=True,
    retry_policy=RetryPolicy(attempts=5, kind="exponential", base_ms=2000),
)
async def redeliver_event(delivery_id: int) -> None:
    """Deliver one event delivery again with fresh attempts (a replayed dead letter)."""
    await dispatch.redeliver(await dispatcher.context(), delivery_id)
