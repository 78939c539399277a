"""Fair lanes: campaign sends wait in one Redis list per company and are fed into ``messages.low`` round-robin.

A single FIFO would make a company that starts a 100,000-recipient campaign a minute after another wait for
the whole first campaign. Instead, fan-out puts each send's payload in the queue's message hash (as
Dramatiq's own enqueue does) but its id in the company's *lane*; a feeder keeps ``messages.low`` topped up to
a small buffer by taking up to ``quantum × weight`` ids from each non-empty lane in turn (``weight`` is
the company's ``campaign_weight``, 1 by default). Two companies of equal weight sending at once thus each get
half the capacity, whatever their backlogs (a weight-2 company two thirds), and urgent/normal traffic is untouched (its
queues have priority in every worker).

Keys (:class:`libs.keys.LaneKeys`, under ``<namespace>:zapq:lanes:<queue>:``): ``lane:<company>`` (ids),
``ring`` (companies whose lane is not empty, in turn order), ``members`` (the same as a set), ``weights``
(company → weight, written by fan-out) and ``backlog`` (ids in all lanes, for O(1) stats).
Every operation is atomic (a ``MULTI`` or one Lua script), so any number of producers and feeders may run.

**Parking**: a send of a paused campaign is not deferred again and again (which would spend its defer budget
and the workers' time for as long as the pause lasts): the sender *parks* a fresh copy of it in
``parked:<campaign>`` (payload in ``parked.msgs``, not in the queue's hash, so the queue does not look busy;
the campaign's company in the ``parked`` hash) and acks the job. Resume and cancel :meth:`Lanes.unpark` the
campaign — its sends go back to the tail of the company's lane (a cancelled one is then skipped by the
sender) — and so does the scheduler's sweep for any campaign no longer paused.

The feeder runs in every process that consumes ``messages.low`` (:class:`LaneFeeder`), every
``FEED_INTERVAL_S``; fan-out also feeds once right after it pushes, so sends start without waiting for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from dramatiq import Broker, Message, Middleware

from libs import contracts, lua
from libs.dramatiq_ext import consumed_queues
from libs.enqueue import prepared
from libs.keys import BrokerKeys, LaneKeys, LifecycleKeys

logger = logging.getLogger(__name__)

#: How often a feeder tops the queue up.
FEED_INTERVAL_S = 0.05
#: Ids taken from one lane per turn.
QUANTUM = 50
#: Sends kept waiting in ``messages.low`` itself: enough for the workers between two feeds, small enough
#: that a company starting later gets its share within seconds.
BUFFER = 1_000

#: A company's lane got ids (``libs/lua/lanes_join_ring.lua``).
JOIN_RING = lua.source("lanes_join_ring")
#: Feeds the lanes into their queue, deficit round-robin (``libs/lua/lanes_feed.lua``).
FEED = lua.source("lanes_feed")
#: Puts a campaign's parked sends back in its company's lane (``libs/lua/lanes_unpark.lua``).
UNPARK = lua.source("lanes_unpark")


@dataclass(frozen=True)
class Lanes:
    """The lanes of one queue in one namespace."""

    namespace: str
    queue: str = contracts.MESSAGES_LOW
    #: Ids kept waiting in the queue itself.
    buffer: int = BUFFER
    #: Ids taken from one lane per turn.
    quantum: int = QUANTUM

    @property
    def names(self) -> LaneKeys:
        """The keys of these lanes."""
        return LaneKeys(self.namespace, self.queue)

    @property
    def prefix(self) -> str:
        """``<namespace>:zapq:lanes:<queue>:``."""
        return self.names.prefix

    def lane(self, company_id: int | str) -> str:
        """The list of one company's waiting ids."""
        return self.names.lane(company_id)

    @property
    def backlog_key(self) -> str:
        """How many ids wait in all lanes together."""
        return self.names.backlog

    def push(self, client: redis.Redis, company_id: int, messages: Iterable[Message[Any]], *, weight: int = 1) -> int:
        """Put ``messages`` (all for ``queue``) in ``company_id``'s lane in one ``MULTI``; returns how many.

        ``weight`` (the company's ``campaign_weight``) is how many quanta the lane gets per turn.
        """
        rows = prepared(messages)
        if not rows:
            return 0
        assert {row.queue for row in rows} == {self.queue}, "a lane holds messages of its own queue only"
        names = self.names
        pipe = client.pipeline(transaction=True)
        pipe.hset(BrokerKeys(self.namespace).messages(self.queue), mapping={row.redis_id: row.data for row in rows})
        pipe.rpush(self.lane(company_id), *(row.redis_id for row in rows))
        pipe.incrby(self.backlog_key, len(rows))
        pipe.hset(names.weights, str(company_id), str(max(1, weight)))
        pipe.eval(JOIN_RING, 2, names.ring, names.members, str(company_id))
        pipe.execute()
        return len(rows)

    def feed(self, client: redis.Redis) -> int:
        """Move ids from the lanes into the queue, round-robin, until ``buffer`` wait there; returns how many."""
        names = self.names
        keys = (
            BrokerKeys(self.namespace).queue(self.queue),
            names.ring,
            names.members,
            names.backlog,
            LifecycleKeys(self.namespace).seq(self.queue),
            names.weights,
            names.credit,
        )
        moved: Any = client.eval(FEED, len(keys), *keys, names.lane_prefix, self.buffer, self.quantum)
        return int(moved)

    def _park_commands(self, pipe: Any, campaign_id: int, company_id: int, message: Message[Any]) -> None:
        [row] = prepared([message])
        names = self.names
        pipe.hset(names.parked_messages, row.redis_id, row.data)  # not the queue's: idle, not waiting
        pipe.rpush(names.parked_of(campaign_id), row.redis_id)
        pipe.hset(names.parked, str(campaign_id), str(company_id))

    async def park_async(
        self, client: aioredis.Redis, campaign_id: int, company_id: int, message: Message[Any]
    ) -> None:
        """Keep a fresh copy of ``message`` (a send of paused campaign ``campaign_id``) until it is unparked."""
        pipe = client.pipeline(transaction=True)
        self._park_commands(pipe, campaign_id, company_id, message)
        await pipe.execute()

    def _unpark_args(self, campaign_id: int) -> tuple[Any, ...]:
        names = self.names
        keys = (
            names.parked_of(campaign_id),
            names.parked,
            names.parked_messages,
            BrokerKeys(self.namespace).messages(self.queue),
        )
        argv = (str(campaign_id), names.lane_prefix, names.ring, names.members, names.backlog)
        return (UNPARK, len(keys), *keys, *argv)

    def unpark(self, client: redis.Redis, campaign_id: int) -> int:
        """Put campaign ``campaign_id``'s parked sends back in its company's lane; returns how many."""
        moved: Any = client.eval(*self._unpark_args(campaign_id))
        return int(moved)

    async def unpark_async(self, client: aioredis.Redis, campaign_id: int) -> int:
        """The asyncio twin of :meth:`unpark`."""
        pending: Any = client.eval(*self._unpark_args(campaign_id))
        return int(await pending)

    def parked_campaigns(self, client: redis.Redis) -> list[int]:
        """Campaigns with parked sends."""
        found: Any = client.hkeys(self.names.parked)
        return sorted(int(c) for c in found)

    def backlog(self, client: redis.Redis) -> int:
        """Ids waiting in the lanes."""
        value: Any = client.get(self.backlog_key)
        return int(value or 0)


class LaneFeeder(Middleware):
    """Feeds the lanes of ``queue`` from a thread of each worker process that consumes it."""

    def __init__(self, lanes: Lanes, interval: float = FEED_INTERVAL_S) -> None:
        self.lanes = lanes
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Start feeding if this worker consumes the queue."""
        whitelist = consumed_queues(worker)
        if whitelist and self.lanes.queue not in whitelist:
            return
        if self.lanes.queue not in broker.get_declared_queues():
            return
        client = broker.client  # type: ignore[attr-defined]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(client,), name="zapq-lane-feeder", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Stop feeding before the consumers stop: ids still in a lane stay there for the next worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, client: redis.Redis) -> None:
        failing = False
        while not self._stop.wait(self.interval):
            try:
                self.lanes.feed(client)
            except redis.RedisError:
                if not failing:  # once per outage, not every 50 ms
                    logger.warning("cannot feed the campaign lanes: Redis unavailable", exc_info=True)
                failing = True
                self._stop.wait(1.0)
            else:
                failing = False
