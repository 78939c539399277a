"""Actors of the media fetcher (queue ``media``: 6 attempts, exponential from 5 s, see ``libs.middleware.policy``).

``concurrent``: one worker thread keeps many downloads in flight on the event loop. A size or hash mismatch
and an expired URL are transient (retried with a fresh URL); a file over the limit, a missing message and a
bridge's garbage answer are permanent (dead-lettered at once).
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

from libs import contracts
from libs.errors import PermanentError, RecordNotFoundError
from libs.media.fetch import fetch_inbound, give_up
from libs.middleware.retry import is_final_attempt
from services.media_fetcher import broker, fetcher

#: A 100 MB download at a few MB/s, with room.
FETCH_TIME_LIMIT_MS = 300_000


@dramatiq.actor(
    actor_name=contracts.FETCH_MEDIA.actor_name,
    queue_name=contracts.FETCH_MEDIA.queue_name,
    time_limit=FETCH_TIME_LIMIT_MS,
    concurrent=True,
)
async def fetch_media(message_id: int) -> None:
    """Fetch, check and keep the file of one inbound media message (safe to run twice); on its permanent or
    last failure the message is marked so that the sweep leaves it alone."""
    context = await fetcher.context()
    try:
        await fetch_inbound(context, message_id)
    except Exception as exc:
        if not isinstance(exc, RecordNotFoundError) and (
            isinstance(exc, PermanentError) or is_final_attempt(broker, CurrentMessage.get_current_message())
        ):
            await give_up(context, message_id, exc)
        raise
