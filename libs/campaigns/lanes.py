"""Fair lanes: campaign sends wait in one Redis list per company and are fed into ``messages.low`` round-robin.

A single FIFO would make a company that starts a 100,000-recipient campaign a minute after another wait for
the whole first campaign. Instead, fan-out puts each send's payload in the queue's message hash (as
Dramatiq's own enqueue does) but its id in the company's *lane*; a feeder keeps ``messages.low`` topped up to
a small buffer by taking up to ``quantum × weight`` ids from each non-empty lane in turn (``weight`` is
the company's ``campaign_weight``, 1 by default). Two companies of equal weight sending at once thus each get
half the capacity, whatever their backlogs (a weight-2 company two thirds), and urgent/normal traffic is untouched (its
queues have priority in every worker).

Keys (under ``<namespace>:zapq:lanes:<queue>:``): ``lane:<company>`` (ids), ``ring`` (companies whose lane is
not empty, in turn order), ``members`` (the same as a set), ``weights`` (company → weight, written by
fan-out) and ``backlog`` (ids in all lanes, for O(1) stats).
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

from libs import contracts
from libs.enqueue import prepared
from libs.middleware.lifecycle import LifecycleKeys

logger = logging.getLogger(__name__)

#: How often a feeder tops the queue up.
FEED_INTERVAL_S = 0.05
#: Ids taken from one lane per turn.
QUANTUM = 50
#: Sends kept waiting in ``messages.low`` itself: enough for the workers between two feeds, small enough
#: that a company starting later gets its share within seconds.
BUFFER = 1_000

JOIN_RING = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
"""

#: KEYS: queue list, ring, members, backlog, seq, weights, credit. ARGV: lane key prefix, buffer, quantum.
#: Deficit round-robin: the ring's head lane takes up to its credit (quantum × weight); the turn passes on
#: only once the credit is spent, so a feed cut short by the buffer resumes the same lane next time.
FEED = """
local room = tonumber(ARGV[2]) - redis.call('LLEN', KEYS[1])
local quantum = tonumber(ARGV[3])
local moved = 0
while room > 0 do
  local company = redis.call('LINDEX', KEYS[2], 0)
  if not company then break end
  local lane = ARGV[1] .. company
  local credit = tonumber(redis.call('HGET', KEYS[7], company))
  if not credit then
    credit = quantum * math.max(1, tonumber(redis.call('HGET', KEYS[6], company) or 1) or 1)
  end
  local ids = redis.call('LPOP', lane, math.min(credit, room))
  local got = 0
  if ids then
    got = #ids
    redis.call('RPUSH', KEYS[1], unpack(ids))
    moved = moved + got
    room = room - got
  end
  credit = credit - got
  if redis.call('LLEN', lane) == 0 then
    redis.call('LPOP', KEYS[2])
    redis.call('SREM', KEYS[3], company)
    redis.call('HDEL', KEYS[7], company)
  elseif credit <= 0 or got == 0 then
    redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
    redis.call('HDEL', KEYS[7], company)
  else
    redis.call('HSET', KEYS[7], company, credit)
  end
end
if moved > 0 then
  redis.call('DECRBY', KEYS[4], moved)
  redis.call('INCRBY', KEYS[5], moved)
end
return moved
"""


#: KEYS: parked list, parked hash (campaign → company), parked payloads, queue payloads. ARGV: campaign, lane
#: key prefix, ring, members, backlog.
UNPARK = """
local company = redis.call('HGET', KEYS[2], ARGV[1])
if not company then return 0 end
local lane = ARGV[2] .. company
local moved = 0
while true do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local payload = redis.call('HGET', KEYS[3], id)
  if payload then
    redis.call('HSET', KEYS[4], id, payload)
    redis.call('HDEL', KEYS[3], id)
    redis.call('RPUSH', lane, id)
    moved = moved + 1
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
if moved > 0 then
  redis.call('INCRBY', ARGV[5], moved)
  if redis.call('SADD', ARGV[4], company) == 1 then redis.call('RPUSH', ARGV[3], company) end
end
return moved
"""


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
    def prefix(self) -> str:
        """``<namespace>:zapq:lanes:<queue>:``."""
        return f"{LifecycleKeys(self.namespace).prefix}lanes:{self.queue}:"

    def lane(self, company_id: int | str) -> str:
        """The list of one company's waiting ids."""
        return f"{self.prefix}lane:{company_id}"

    @property
    def backlog_key(self) -> str:
        """How many ids wait in all lanes together."""
        return f"{self.prefix}backlog"

    def push(self, client: redis.Redis, company_id: int, messages: Iterable[Message[Any]], *, weight: int = 1) -> int:
        """Put ``messages`` (all for ``queue``) in ``company_id``'s lane in one ``MULTI``; returns how many.

        ``weight`` (the company's ``campaign_weight``) is how many quanta the lane gets per turn.
        """
        rows = prepared(messages)
        if not rows:
            return 0
        assert {row.queue for row in rows} == {self.queue}, "a lane holds messages of its own queue only"
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"{self.namespace}:{self.queue}.msgs", mapping={row.redis_id: row.data for row in rows})
        pipe.rpush(self.lane(company_id), *(row.redis_id for row in rows))
        pipe.incrby(self.backlog_key, len(rows))
        pipe.hset(f"{self.prefix}weights", str(company_id), str(max(1, weight)))
        pipe.eval(JOIN_RING, 2, f"{self.prefix}ring", f"{self.prefix}members", str(company_id))
        pipe.execute()
        return len(rows)

    def feed(self, client: redis.Redis) -> int:
        """Move ids from the lanes into the queue, round-robin, until ``buffer`` wait there; returns how many."""
        keys = (
            f"{self.namespace}:{self.queue}",
            f"{self.prefix}ring",
            f"{self.prefix}members",
            self.backlog_key,
            LifecycleKeys(self.namespace).seq(self.queue),
            f"{self.prefix}weights",
            f"{self.prefix}credit",
        )
        moved: Any = client.eval(FEED, len(keys), *keys, f"{self.prefix}lane:", self.buffer, self.quantum)
        return int(moved)

    def _park_commands(self, pipe: Any, campaign_id: int, company_id: int, message: Message[Any]) -> None:
        [row] = prepared([message])
        pipe.hset(f"{self.prefix}parked.msgs", row.redis_id, row.data)  # not the queue's: idle, not waiting
        pipe.rpush(f"{self.prefix}parked:{campaign_id}", row.redis_id)
        pipe.hset(f"{self.prefix}parked", str(campaign_id), str(company_id))

    async def park_async(
        self, client: aioredis.Redis, campaign_id: int, company_id: int, message: Message[Any]
    ) -> None:
        """Keep a fresh copy of ``message`` (a send of paused campaign ``campaign_id``) until it is unparked."""
        pipe = client.pipeline(transaction=True)
        self._park_commands(pipe, campaign_id, company_id, message)
        await pipe.execute()

    def _unpark_args(self, campaign_id: int) -> tuple[Any, ...]:
        keys = (
            f"{self.prefix}parked:{campaign_id}",
            f"{self.prefix}parked",
            f"{self.prefix}parked.msgs",
            f"{self.namespace}:{self.queue}.msgs",
        )
        argv = (
            str(campaign_id),
            f"{self.prefix}lane:",
            f"{self.prefix}ring",
            f"{self.prefix}members",
            self.backlog_key,
        )
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
        found: Any = client.hkeys(f"{self.prefix}parked")
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
        whitelist = getattr(worker, "consumer_whitelist", None)
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
