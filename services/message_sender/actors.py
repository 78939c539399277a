"""The three tier actors of the message-sender: one send function, three queues, three priorities."""

from __future__ import annotations

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import CurrentMessage

from libs import contracts
from libs.errors import Defer
from libs.middleware.retry import is_final_attempt
from libs.sending.send import send_message as send
from services.message_sender import broker, sender

TIME_LIMIT_MS = 60_000


async def _send(message_id: int, final_attempt: bool) -> None:
    await send(await sender.context(), message_id, final_attempt=final_attempt)


def _run(message_id: int) -> None:
    final = is_final_attempt(broker, CurrentMessage.get_current_message())
    loop_thread = get_event_loop_thread()
    assert loop_thread is not None, "the AsyncIO middleware is not running"
    loop_thread.run_coroutine(_send(message_id, final))


@dramatiq.actor(
    actor_name=contracts.SEND_URGENT.actor_name,
    queue_name=contracts.SEND_URGENT.queue_name,
    priority=0,
    time_limit=TIME_LIMIT_MS,
    throws=(Defer,),
)
def send_message_urgent(message_id: int) -> None:
    """Send an urgent message (a human is waiting)."""
    _run(message_id)


@dramatiq.actor(
    actor_name=contracts.SEND_NORMAL.actor_name,
    queue_name=contracts.SEND_NORMAL.queue_name,
    priority=10,
    time_limit=TIME_LIMIT_MS,
    throws=(Defer,),
)
def send_message(message_id: int) -> None:
    """Send a normal-priority message."""
    _run(message_id)


@dramatiq.actor(
    actor_name=contracts.SEND_LOW.actor_name,
    queue_name=contracts.SEND_LOW.queue_name,
    priority=20,
    time_limit=TIME_LIMIT_MS,
    throws=(Defer,),
)
def send_message_low(message_id: int) -> None:
    """Send campaign traffic."""
    _run(message_id)
