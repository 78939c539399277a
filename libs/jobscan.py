"""Which jobs of a queue exist in Redis right now, read from the broker's own structures.

The outbox sweeps (:mod:`libs.sending.sweep`, :mod:`libs.campaigns.sweep`) must tell a job that waits
legitimately — for a long time, maybe — from one Redis lost. A job exists when a consumer can still get to it:
its id is in a place a consumer takes ids from **and** its payload is in that place's hash. The places, per
queue ``q`` (names under the broker's namespace; see ``/work/shared/docs/dramatiq-notes.md``):

======================================  ==================  =============================================
ids                                     payloads            what waits there
======================================  ==================  =============================================
``q`` (list)                            ``q.msgs``          waiting
``__acks__.<worker>.q`` (set)           ``q.msgs``          fetched: prefetched or running
``q.DQ`` (list)                         ``q.DQ.msgs``       delayed: retries, deferrals
``__acks__.<worker>.q.DQ`` (set)        ``q.DQ.msgs``       delayed, held by a worker until due
``q.XQ`` (zset)                         ``q.XQ.msgs``       dead (an operator decides)
lanes ``…:lane:<company>`` (lists)      ``q.msgs``          campaign sends waiting their turn (``Lanes``)
lanes ``…:parked:<campaign>`` (lists)   ``…:parked.msgs``   sends of a paused campaign
budget ``…:wait:<campaign>`` (lists)    ``budget.msgs``     campaign sends waiting for messaging-limit budget
======================================  ==================  =============================================

Workers are the members of ``__heartbeats__`` (an ack set of a worker not listed there is never requeued, so
its jobs are rightly counted missing). A scan is one Lua call per chunk of ``CHUNK`` ids: the ids and their
payloads are read together inside Redis and only the value of one keyword argument (``message_id`` of a send,
``campaign_id`` of an expansion) comes back, so 100,000 waiting jobs cost about a hundred short calls and a few
hundred kilobytes — nothing is decoded in Python. Lists are read from the tail in negative ranges: producers
push at the tail and consumers pop at the head, so an id only ever moves towards chunks not read yet.

The places are read one after the other, in the order a job travels (budget wait → parked → lane → queue →
fetched → delayed → fetched delayed → queue again → dead → parked, budget wait again), so a job moving during
the scan is normally found where it arrives. A scan is still not atomic: the sweeps act only on what two scans a
while apart both found missing (:class:`Suspects`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from libs.campaigns.lanes import Lanes
from libs.dramatiq_ext import dq_name
from libs.keys import BrokerKeys, BudgetKeys, LaneKeys, SweepKeys

#: Ids read per Lua call.
CHUNK = 1_000
#: Chunks of one list sent per round trip.
CHUNKS_PER_TRIP = 16

#: ARGV: kind (list | zset | set), id key, payload hash, keyword name, then start and stop (list / zset).
#: Returns the number of ids read, then the keyword's value of each id whose payload exists.
SCAN_LUA = """
local kind, ref, hash, name = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids
if kind == 'list' then ids = redis.call('lrange', ref, ARGV[5], ARGV[6])
elseif kind == 'zset' then ids = redis.call('zrange', ref, ARGV[5], ARGV[6])
else ids = redis.call('smembers', ref) end
local out = {#ids}
local pattern = '"kwargs":{[^}]*"' .. name .. '":(%d+)'
for first = 1, #ids, 500 do
  local last = math.min(first + 499, #ids)
  local payloads = redis.call('hmget', hash, unpack(ids, first, last))
  for i = 1, #payloads do
    local payload = payloads[i]
    if payload then
      local value = string.match(payload, pattern)
      if not value then
        local ok, message = pcall(cjson.decode, payload)
        if ok and type(message) == 'table' and type(message.kwargs) == 'table'
            and type(message.kwargs[name]) == 'number' then
          value = string.format('%d', message.kwargs[name])
        end
      end
      if value then out[#out + 1] = value end
    end
  end
end
return out
"""


@dataclass(frozen=True)
class Place:
    """Where ids wait (``kind``: list, set or zset) and the hash holding their payloads."""

    kind: str
    ids: str
    payloads: str


class JobScan:
    """Reads which values of one keyword argument the jobs of some queues carry (see the module docstring)."""

    def __init__(self, client: redis.Redis, namespace: str, *, chunk: int = CHUNK) -> None:
        self.client = client
        self.namespace = namespace
        self.chunk = chunk
        self._script = client.register_script(SCAN_LUA)
        self.keys = BrokerKeys(namespace)

    def live_workers(self) -> list[str]:
        """The broker ids with a heartbeat (whose ack sets Dramatiq will requeue if they die)."""
        members: Any = self.client.zrange(self.keys.heartbeats, 0, -1)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def queue_places(self, queue: str, workers: list[str], lanes: Lanes | None = None) -> list[Place]:
        """Every place of ``queue`` in travel order (lanes and parked sends when ``lanes`` is given)."""
        keys = self.keys
        payloads, delayed = keys.messages(queue), keys.delayed_messages(queue)
        fetched = [Place("set", keys.acks(w, queue), payloads) for w in workers]
        fetched_delayed = [Place("set", keys.acks(w, dq_name(queue)), delayed) for w in workers]
        waiting = Place("list", keys.queue(queue), payloads)
        parked = self._parked(lanes) if lanes is not None else []
        in_lanes = self._lanes(lanes) if lanes is not None else []
        budget = self._budget_waiting() if lanes is not None else []
        return [
            *budget,
            *parked,
            *in_lanes,
            waiting,
            *fetched,
            Place("list", keys.queue(dq_name(queue)), delayed),
            *fetched_delayed,
            waiting,
            *fetched,
            Place("zset", keys.dead(queue), keys.dead_messages(queue)),
            *parked,
            *budget,
        ]

    def _budget_waiting(self) -> list[Place]:
        """Campaign sends waiting for messaging-limit budget (:mod:`libs.rules.budget`)."""
        keys = BudgetKeys(self.namespace)
        campaigns: Any = self.client.hkeys(keys.campaign_portfolio)
        return [
            Place("list", keys.wait(c.decode() if isinstance(c, bytes) else str(c)), keys.messages) for c in campaigns
        ]

    def _lanes(self, lanes: Lanes) -> list[Place]:
        ring: Any = self.client.lrange(LaneKeys(self.namespace, lanes.queue).ring, 0, -1)  # the lanes it serves
        companies = dict.fromkeys(c.decode() if isinstance(c, bytes) else str(c) for c in ring)
        payloads = self.keys.messages(lanes.queue)
        return [Place("list", lanes.lane(company), payloads) for company in companies]

    def _parked(self, lanes: Lanes) -> list[Place]:
        keys = LaneKeys(self.namespace, lanes.queue)
        return [
            Place("list", keys.parked_of(campaign), keys.parked_messages)
            for campaign in lanes.parked_campaigns(self.client)
        ]

    def values(self, places: Iterable[Place], name: str) -> set[int]:
        """The ``name`` keyword values of every job found in ``places``."""
        found: set[int] = set()
        for place in places:
            if place.kind == "set":
                found.update(self._read(place, name, [(0, 0)])[1])
            else:
                found.update(self._read_range(place, name))
        return found

    def _read_range(self, place: Place, name: str) -> set[int]:
        """A list or zset from its tail, ``CHUNKS_PER_TRIP`` chunks per round trip, until a short chunk."""
        found: set[int] = set()
        first = 0
        while True:
            ranges = [(-(k + 1) * self.chunk, -k * self.chunk - 1) for k in range(first, first + CHUNKS_PER_TRIP)]
            complete, values = self._read(place, name, ranges)
            found.update(values)
            if not complete:
                return found
            first += CHUNKS_PER_TRIP

    def _read(self, place: Place, name: str, ranges: list[tuple[int, int]]) -> tuple[bool, set[int]]:
        """Read ``ranges`` of ``place`` in one round trip; whether every chunk was full, and the values."""
        pipe = self.client.pipeline(transaction=False)
        for start, stop in ranges:
            self._script(args=[place.kind, place.ids, place.payloads, name, start, stop], client=pipe)
        complete, values = True, set[int]()
        for reply in pipe.execute():
            count, *found = reply
            complete = complete and place.kind != "set" and int(count) == self.chunk
            values.update(int(v) for v in found)
        return complete, values


class Suspects:
    """Ids a sweep found missing, kept in Redis until the next sweep: only an id missing in two scans at least
    ``confirm_after`` seconds apart, with the same ``stamp`` (the row unchanged), is acted on.

    One hash per sweep (``<namespace>:zapq:sweep:<name>:suspects``: id → ``stamp first_seen``), replaced by each
    sweep, expiring after ``ttl`` seconds (a sweep that stopped running leaves nothing stale behind).
    """

    def __init__(self, client: redis.Redis, namespace: str, name: str, *, ttl: int = 3600) -> None:
        self.client = client
        self.key = SweepKeys(namespace).suspects(name)
        self.ttl = ttl

    def confirm(self, missing: dict[int, str], *, confirm_after: float, now: float | None = None) -> set[int]:
        """Record ``missing`` (id → stamp) as this scan's suspects; returns those confirmed by the previous one."""
        now = time.time() if now is None else now
        previous: Any = self.client.hgetall(self.key)
        seen: dict[int, tuple[str, float]] = {}
        for key, value in previous.items():
            stamp, _, first = (value.decode() if isinstance(value, bytes) else str(value)).rpartition(" ")
            seen[int(key)] = (stamp, float(first))
        confirmed: set[int] = set()
        keep: dict[str, str] = {}
        for message_id, stamp in missing.items():
            before = seen.get(message_id)
            if before is not None and before[0] == stamp:
                if before[1] <= now - confirm_after:
                    confirmed.add(message_id)
                    continue
                keep[str(message_id)] = f"{stamp} {before[1]}"
            else:
                keep[str(message_id)] = f"{stamp} {now}"
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key)
        if keep:
            pipe.hset(self.key, mapping=keep)
            pipe.expire(self.key, self.ttl)
        pipe.execute()
        return confirmed


#: Delete the lock only if it still holds our token.
RELEASE_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class SweepLock:
    """At most one sweep of a kind at a time (two schedulers, or a slow sweep overlapping the next tick)."""

    def __init__(self, client: redis.Redis, namespace: str, name: str, *, ttl: int = 300) -> None:
        self.client = client
        self.key = SweepKeys(namespace).lock(name)
        self.ttl = ttl
        self.token = uuid.uuid4().hex

    def __enter__(self) -> bool:
        """Take the lock; False when another sweep holds it."""
        return bool(self.client.set(self.key, self.token, nx=True, ex=self.ttl))

    def __exit__(self, *exc: object) -> None:
        """Release the lock if it is still ours (it expires on its own after ``ttl`` otherwise)."""
        self.client.eval(RELEASE_LUA, 1, self.key, self.token)
