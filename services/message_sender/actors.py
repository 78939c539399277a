"""The three tier actors of the message-sender: one send function, three queues, three priorities.

They are ``concurrent``: each worker thread keeps many sends in flight on the event loop, so a process's
throughput is not capped at threads ÷ provider latency.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from libs import contracts
from libs.errors import Defer
from libs.middleware.retry import is_final_attempt
from libs.middleware.tracing import TraceContext
from libs.sending.send import send_message as send
from services.message_sender import broker, sender

TIME_LIMIT_MS = 60_000
OPTIONS: dict[str, Any] = {"time_limit": TIME_LIMIT_MS, "throws": (Defer,), "concurrent": True}


async def _send(message_id: int) -> None:
    message = CurrentMessage.get_current_message()
    final = is_final_attempt(broker, message)
    await send(await sender.context(), message_id, final_attempt=final, trace=TraceContext.parent(message))


@dramatiq.actor(
    actor_name=contracts.SEND_URGENT.actor_name, queue_name=contracts.SEND_URGENT.queue_name, priority=0, **OPTIONS
)
async def send_message_urgent(message_id: int) -> None:
    """Send an urgent message (a human is waiting)."""
    await _send(message_id)


@dramatiq.actor(
    actor_name=contracts.SEND_NORMAL.actor_name, queue_name=contracts.SEND_NORMAL.queue_name, priority=10, **OPTIONS
)
async def send_message(message_id: int) -> None:
    """Send a normal-priority message."""
    await _send(message_id)


@dramatiq.actor(
    actor_name=contracts.SEND_LOW.actor_name, queue_name=contracts.SEND_LOW.queue_name, priority=20, **OPTIONS
)
async def send_message_low(message_id: int) -> None:
    """Send campaign traffic."""
    await _send(message_id)
