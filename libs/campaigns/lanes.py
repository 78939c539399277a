"""Fair lanes: campaign sends wait in one Redis list per company and are fed into ``messages.low`` round-robin.

A single FIFO would make a company that starts a 100,000-recipient campaign a minute after another wait for
the whole first campaign. Instead, fan-out puts each send's payload in the queue's message hash (as
Dramatiq's own enqueue does) but its id in the company's *lane*; a feeder keeps ``messages.low`` topped up to
a small buffer by taking up to ``quantum`` ids from each non-empty lane in turn. Two companies sending at
once thus each get half the capacity, whatever their backlogs, and urgent/normal traffic is untouched (its
queues have priority in every worker).

Keys (under ``<namespace>:zapq:lanes:<queue>:``): ``lane:<company>`` (ids), ``ring`` (companies whose lane is
not empty, in turn order), ``members`` (the same as a set) and ``backlog`` (ids in all lanes, for O(1) stats).
Both operations are atomic (a ``MULTI`` and one Lua script), so any number of producers and feeders may run.

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

#: KEYS: queue list, ring, members, backlog, seq. ARGV: lane key prefix, buffer, quantum.
FEED = """
local room = tonumber(ARGV[2]) - redis.call('LLEN', KEYS[1])
local quantum = tonumber(ARGV[3])
local moved, empty_turns = 0, 0
while room > 0 do
  local company = redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
  if not company then break end
  local lane = ARGV[1] .. company
  local ids = redis.call('LPOP', lane, math.min(quantum, room))
  if ids then
    redis.call('RPUSH', KEYS[1], unpack(ids))
    moved = moved + #ids
    room = room - #ids
    empty_turns = 0
  else
    empty_turns = empty_turns + 1
  end
  if redis.call('LLEN', lane) == 0 then
    redis.call('LREM', KEYS[2], -1, company)
    redis.call('SREM', KEYS[3], company)
  end
  if empty_turns > redis.call('LLEN', KEYS[2]) then break end
end
if moved > 0 then
  redis.call('DECRBY', KEYS[4], moved)
  redis.call('INCRBY', KEYS[5], moved)
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

    def push(self, client: redis.Redis, company_id: int, messages: Iterable[Message[Any]]) -> int:
        """Put ``messages`` (all for ``queue``) in ``company_id``'s lane in one ``MULTI``; returns how many."""
        rows = prepared(messages)
        if not rows:
            return 0
        assert {row.queue for row in rows} == {self.queue}, "a lane holds messages of its own queue only"
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"{self.namespace}:{self.queue}.msgs", mapping={row.redis_id: row.data for row in rows})
        pipe.rpush(self.lane(company_id), *(row.redis_id for row in rows))
        pipe.incrby(self.backlog_key, len(rows))
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
        )
        moved: Any = client.eval(FEED, len(keys), *keys, f"{self.prefix}lane:", self.buffer, self.quantum)
        return int(moved)

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
