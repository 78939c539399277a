"""The provider's answers made durable before they are recorded: a short-lived Redis journal of provider ids.

Once the provider accepted a send, the one thing that must not happen is a second send. The answer (its
provider id) is recorded in Postgres; if that record fails — Postgres stalled, a connection reset, a
failover — the job is deferred with the row still ``sending``, and after the reconcile window the claim takes
the row again. Without the provider id the next attempt could only send again.

So the sender writes the provider id here *before* recording it, keyed by message id, and forgets it once the
record committed. An attempt that finds its row unconfirmed (``sending``, or claimed back after the reconcile
window) reads the journal first and, when the id is there, records it instead of calling the provider.

Keys (:class:`libs.keys.JournalKeys`): ``<namespace>:zapq:sent:<message id>`` → provider id, expiring after
``ttl_s`` (the journal only has to outlive the record's retries and a later replay of the job; an entry is
deleted as soon as its record committed). Writes, reads and deletes of the sends in flight share their round trips
(:class:`~libs.batching.Coalescer`). Every entry is also kept in process memory until its record
committed, so a Redis error while journaling loses nothing for the attempts this process makes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from libs import lua
from libs.batching import Coalescer
from libs.keys import JournalKeys

logger = logging.getLogger(__name__)

#: How long an unrecorded provider id is kept: longer than any record retry (the defer budget spends ~25 min
#: of Postgres outage) and than the replay of a job dead-lettered meanwhile is likely to take.
JOURNAL_TTL_S = 3 * 86_400

#: Writes journal entries, each with its TTL (``libs/lua/set_many.lua``).
WRITE = lua.source("set_many")


class Journal:
    """Provider ids of accepted sends whose record has not committed yet."""

    def __init__(self, client: aioredis.Redis, namespace: str, *, ttl_s: int = JOURNAL_TTL_S) -> None:
        self.client = client
        self.names = JournalKeys(namespace)
        self.ttl_s = ttl_s
        #: This process's entries, until recorded: read first, and kept when Redis refused a write.
        self.memory: dict[int, str] = {}
        self._script = client.register_script(WRITE)
        self._writes: Coalescer[tuple[int, str], None] = Coalescer(self._write_many)
        self._reads: Coalescer[int, str | None] = Coalescer(self._read_many)
        self._forgets: Coalescer[int, None] = Coalescer(self._forget_many)

    def key(self, message_id: int) -> str:
        """The Redis key of one message's entry."""
        return self.names.sent(message_id)

    async def write(self, message_id: int, provider_id: str) -> None:
        """Journal the provider's id for ``message_id`` (call right after the provider accepted the send).

        A Redis error is logged, not raised: the send happened, and the record that follows is what matters; the
        entry stays in this process's memory.
        """
        self.memory[message_id] = provider_id
        try:
            await self._writes((message_id, provider_id))
        except Exception:
            logger.warning("could not journal the provider id of message %s", message_id, exc_info=True)

    async def read(self, message_id: int) -> str | None:
        """The journaled provider id of ``message_id``, or ``None``; a Redis error is raised (unknown)."""
        if (provider_id := self.memory.get(message_id)) is not None:
            return provider_id
        return await self._reads(message_id)

    async def forget(self, message_id: int) -> None:
        """Drop the entry of ``message_id`` once its record committed (a Redis error leaves it to expire)."""
        self.memory.pop(message_id, None)
        try:
            await self._forgets(message_id)
        except Exception:
            logger.info("could not drop the journal entry of message %s; it expires", message_id, exc_info=True)

    async def _write_many(self, items: list[tuple[int, str]]) -> Sequence[None]:
        keys: list[str] = []
        args: list[str | int] = []
        for message_id, provider_id in items:
            keys.append(self.key(message_id))
            args += (self.ttl_s, provider_id)
        await self._script(keys=keys, args=args)
        return [None] * len(items)

    async def _read_many(self, message_ids: list[int]) -> Sequence[str | None]:
        values = await self.client.mget([self.key(message_id) for message_id in message_ids])
        return [value.decode() if isinstance(value, bytes) else value for value in values]

    async def _forget_many(self, message_ids: list[int]) -> Sequence[None]:
        await self.client.unlink(*(self.key(message_id) for message_id in set(message_ids)))
        return [None] * len(message_ids)
