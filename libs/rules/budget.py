"""Meta's messaging limit, enforced before Meta does: a budget of business-initiated recipients per portfolio.

Meta caps how many distinct people a business portfolio (all its numbers together) may reach *outside* a
customer-service window per moving 24 h (250, 2,000, 10K, 100K, unlimited). zapq keeps the same count, in
Redis, per portfolio (:mod:`libs.rules.limits` names the portfolio and its limit):

    reached:<portfolio>     ZSET  recipient digest → when a conversation was last started with it (ms)

A recipient reached within the last 24 h costs nothing again (the same number in two campaigns, or a send
delivered twice, counts once: it is a set); a new one is admitted while the count is under the limit.
**Campaign** fan-out admits each slice in one script call (``libs/lua/budget_admit.lua``: one round trip per
slice, not per message); the sends admitted go to the company's fair lane as before, the rest **wait** — not
failed, not deferred — in the campaign's waiting list (payloads in ``budget.msgs``). Every sender process
(about once a second) and the scheduler (every minute) move waiting sends into their lane as room frees up
(``libs/lua/budget_release.lua``), oldest campaign first. ``GET /api/campaigns/{id}`` shows ``waiting for tier
budget`` with the number waiting and when room frees up next.

Recipients whose window is open when the slice fans out are not business-initiated (Meta does not count
them) and pass without being counted. **Direct** (API) template sends outside the window are counted when they
are created, never held: they are usually one-off, urgent messages (Meta counts them too, so they shrink what
campaigns may use). Baileys connections have no such limit.

The clock is Redis's (one clock for every process) plus a test offset that only exists when
``ZAPQ_TEST_CLOCK`` is on (:meth:`Budget.advance_test_clock`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from dramatiq import Message

from libs import lua
from libs.campaigns.lanes import Lanes
from libs.enqueue import prepared
from libs.keys import BrokerKeys, BudgetKeys
from libs.settings import Settings

#: Meta's moving window.
WINDOW_MS = 86_400_000
#: A portfolio without a known limit: counted, never held.
UNLIMITED = -1
#: Most waiting sends one release call moves (bounds the script's run time; the next poll moves more).
RELEASE_BATCH = 5_000
#: What a campaign with sends waiting for budget shows.
WAITING_STATE = "waiting for tier budget"

ADMIT = lua.source("budget_admit")
RELEASE = lua.source("budget_release")


class TestClockDisabledError(RuntimeError):
    """The test clock was moved although ``ZAPQ_TEST_CLOCK`` is off."""

    __test__ = False


def digest(recipient: str) -> str:
    """The recipient as the budget stores it (no phone number in Redis in clear)."""
    return hashlib.blake2b(recipient.lstrip("+").encode(), digest_size=10).hexdigest()


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC time."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Target:
    """One campaign send as the budget sees it."""

    message_id: int
    recipient: str
    #: The recipient wrote within 24 h: not business-initiated, not counted.
    window_open: bool = False


@dataclass(frozen=True)
class Admission:
    """What one slice's admission did."""

    admitted: list[int]
    waiting: list[int]
    #: Recipients counted in the window after it, and when the oldest of them leaves it (ms; None: empty).
    count: int
    frees_at_ms: int | None


@dataclass(frozen=True)
class Waiting:
    """A campaign's sends waiting for budget."""

    count: int
    #: When the portfolio's oldest reached recipient leaves the window (room for one more), ISO UTC.
    frees_at: str | None

    def as_dict(self) -> dict[str, Any]:
        """The API's ``budget`` object."""
        return {"state": WAITING_STATE, "waiting": self.count, "frees_at": self.frees_at}


@dataclass(frozen=True)
class Budget:
    """The messaging-limit budgets of one namespace."""

    namespace: str
    #: ``ZAPQ_TEST_CLOCK``: whether :meth:`advance_test_clock` may move the clock.
    test_clock: bool = False
    #: ``ZAPQ_MESSAGING_LIMIT``: every portfolio's limit (0: each its own, :mod:`libs.rules.limits`).
    limit_override: int = 0
    window_ms: int = WINDOW_MS

    @classmethod
    def from_settings(cls, settings: Settings) -> Budget:
        """The budgets of ``settings``' namespace, with its limit override and test clock."""
        return cls(settings.redis_namespace, test_clock=settings.test_clock_on, limit_override=settings.messaging_limit)

    @property
    def names(self) -> BudgetKeys:
        """This namespace's budget keys."""
        return BudgetKeys(self.namespace)

    # -- campaign fan-out ---------------------------------------------------------------------------------

    def admit(
        self,
        client: redis.Redis,
        portfolio: str,
        limit: int,
        campaign_id: int,
        company_id: int,
        targets: Sequence[Target],
        message_of: Callable[[int], Message[Any]],
    ) -> Admission:
        """Admit one slice's sends (one script call); park the refused ones for :meth:`release`. Returns the ids
        admitted (push them to the lane) and those waiting."""
        counted = [t for t in targets if not t.window_open]
        free = [t.message_id for t in targets if t.window_open]
        if not counted:
            return Admission(free, [], 0, None)
        names = self.names
        keys = (names.reached(portfolio), names.limits, names.test_clock)
        digests = [digest(t.recipient) for t in counted]
        raw: Any = client.eval(ADMIT, len(keys), *keys, portfolio, limit, self.window_ms, limit, *digests)
        flags, count, oldest, _now = raw
        flags = flags.decode() if isinstance(flags, bytes) else str(flags)
        admitted = free + [t.message_id for t, flag in zip(counted, flags, strict=True) if flag == "1"]
        refused = [(t, d) for t, d, flag in zip(counted, digests, flags, strict=True) if flag != "1"]
        if refused:  # a redelivered slice: those already waiting stay as they are
            known: Any = client.hmget(self.names.waiting_rows, [str(t.message_id) for t, _ in refused])
            new = [pair for pair, found in zip(refused, known, strict=True) if found is None]
            if new:
                self._park(client, portfolio, campaign_id, company_id, new, message_of)
        frees = int(oldest) + self.window_ms if int(oldest) >= 0 else None
        return Admission(admitted, [t.message_id for t, _ in refused], int(count), frees)

    def _park(
        self,
        client: redis.Redis,
        portfolio: str,
        campaign_id: int,
        company_id: int,
        refused: list[tuple[Target, str]],
        message_of: Callable[[int], Message[Any]],
    ) -> None:
        rows = prepared([message_of(t.message_id) for t, _ in refused])
        names = self.names
        pipe = client.pipeline(transaction=True)
        pipe.hset(names.messages, mapping={row.redis_id: row.data for row in rows})
        pairs = list(zip(rows, refused, strict=True))
        pipe.hset(names.entries, mapping={row.redis_id: f"{company_id}|{d}|{t.message_id}" for row, (t, d) in pairs})
        pipe.hset(names.waiting_rows, mapping={str(t.message_id): row.redis_id for row, (t, _) in pairs})
        pipe.rpush(names.wait(campaign_id), *(row.redis_id for row in rows))
        pipe.zadd(names.campaigns(portfolio), {str(campaign_id): time.time()}, nx=True)  # release order only
        pipe.sadd(names.portfolios, portfolio)
        pipe.hset(names.campaign_portfolio, str(campaign_id), portfolio)
        pipe.execute()

    # -- release ------------------------------------------------------------------------------------------

    def _release_args(self, lanes: Lanes, batch: int) -> tuple[Any, ...]:
        names, lane_names = self.names, lanes.names
        keys = (
            names.portfolios,
            names.limits,
            names.messages,
            names.test_clock,
            names.campaign_portfolio,
            names.entries,
            names.waiting_rows,
        )
        argv = (
            names.reached_prefix,
            names.campaigns_prefix,
            names.wait_prefix,
            self.window_ms,
            batch,
            BrokerKeys(self.namespace).messages(lanes.queue),
            lane_names.lane_prefix,
            lane_names.backlog,
            lane_names.members,
            lane_names.ring,
        )
        return (RELEASE, len(keys), *keys, *argv)

    def release(self, client: redis.Redis, lanes: Lanes, batch: int = RELEASE_BATCH) -> int:
        """Move waiting sends into their company's lane as far as the budgets allow; how many moved."""
        moved: Any = client.eval(*self._release_args(lanes, batch))
        return int(moved)

    async def release_async(self, client: aioredis.Redis, lanes: Lanes, batch: int = RELEASE_BATCH) -> int:
        """:meth:`release` from async code (the sender's poll); nothing to do costs one ``SCARD``."""
        if not await client.scard(self.names.portfolios):  # type: ignore[misc]
            return 0
        moved: Any = await client.eval(*self._release_args(lanes, batch))  # type: ignore[misc]
        return int(moved)

    async def forget_campaign_async(self, client: aioredis.Redis, campaign_id: int) -> int:
        """Drop a cancelled campaign's waiting sends (its messages are cancelled); how many."""
        names = self.names
        ids: Any = await client.lrange(names.wait(campaign_id), 0, -1)  # type: ignore[misc]
        portfolio: Any = await client.hget(names.campaign_portfolio, str(campaign_id))  # type: ignore[misc]
        entries: Any = await client.hmget(names.entries, ids) if ids else []  # type: ignore[misc]
        rows = [(e.decode() if isinstance(e, bytes) else e).rsplit("|", 1)[1] for e in entries if e is not None]
        pipe: Any = client.pipeline(transaction=True)
        if ids:
            pipe.hdel(names.messages, *ids)
            pipe.hdel(names.entries, *ids)
        if rows:
            pipe.hdel(names.waiting_rows, *rows)
        pipe.delete(names.wait(campaign_id))
        pipe.hdel(names.campaign_portfolio, str(campaign_id))
        if portfolio is not None:
            pipe.zrem(names.campaigns(portfolio.decode() if isinstance(portfolio, bytes) else portfolio), campaign_id)
        await pipe.execute()
        return len(ids)

    # -- reading ------------------------------------------------------------------------------------------

    async def waiting_async(self, client: aioredis.Redis, campaign_id: int) -> Waiting | None:
        """The campaign's sends waiting for budget, or ``None`` when none wait."""
        names = self.names
        pipe: Any = client.pipeline(transaction=False)
        pipe.llen(names.wait(campaign_id))
        pipe.hget(names.campaign_portfolio, str(campaign_id))
        count, portfolio = await pipe.execute()
        if not count or portfolio is None:
            return None
        portfolio = portfolio.decode() if isinstance(portfolio, bytes) else str(portfolio)
        now = await self.now_ms_async(client)
        oldest: Any = await client.zrangebyscore(
            names.reached(portfolio), now - self.window_ms, "+inf", start=0, num=1, withscores=True
        )
        frees = int(oldest[0][1]) + self.window_ms if oldest else None
        return Waiting(int(count), iso(frees))

    async def now_ms_async(self, client: aioredis.Redis) -> int:
        """The budget's clock (Redis's, plus the test offset)."""
        pipe: Any = client.pipeline(transaction=False)
        pipe.time()
        pipe.get(self.names.test_clock)
        (seconds, micros), offset = await pipe.execute()
        return int(seconds) * 1000 + int(micros) // 1000 + int(offset or 0)

    def now_ms(self, client: redis.Redis) -> int:
        """:meth:`now_ms_async`, sync."""
        pipe: Any = client.pipeline(transaction=False)
        pipe.time()
        pipe.get(self.names.test_clock)
        (seconds, micros), offset = pipe.execute()
        return int(seconds) * 1000 + int(micros) // 1000 + int(offset or 0)

    def reached(self, client: redis.Redis, portfolio: str) -> tuple[int, int]:
        """``(recipients reached in the window, the budget's now in ms)``."""
        now = self.now_ms(client)
        count: Any = client.zcount(self.names.reached(portfolio), now - self.window_ms + 1, "+inf")
        return int(count), now

    def waiting_in(self, client: redis.Redis, portfolio: str) -> int:
        """Campaign sends of ``portfolio`` waiting for budget."""
        campaigns: Any = client.zrange(self.names.campaigns(portfolio), 0, -1)
        if not campaigns:
            return 0
        pipe = client.pipeline(transaction=False)
        for campaign in campaigns:
            pipe.llen(self.names.wait(campaign.decode() if isinstance(campaign, bytes) else campaign))
        return sum(int(n) for n in pipe.execute())

    def finish_estimate(self, client: redis.Redis, portfolio: str, limit: int, needed: int) -> dict[str, Any] | None:
        """When ``needed`` new recipients would all have been admitted at the limit's pace, or ``None`` when they
        fit in what is left now. Each slot of the limit frees 24 h after it was used: the free ones now, then
        the reached recipients' in the order they leave the window, then the same slots again a day later."""
        if limit < 0:
            return None
        count, now = self.reached(client, portfolio)
        remaining = max(0, limit - count)
        if needed <= remaining:
            return None
        if limit == 0:
            return {"remaining": 0, "limit": 0, "finishes_at": None}
        index = (needed - 1) % limit  # slot order: ``remaining`` free now, then the reached ones by age
        days = (needed - 1) // limit
        if index < remaining:
            slot = now
        else:
            found: Any = client.zrangebyscore(
                self.names.reached(portfolio),
                now - self.window_ms + 1,
                "+inf",
                start=index - remaining,
                num=1,
                withscores=True,
            )
            slot = int(found[0][1]) + self.window_ms if found else now
        return {"remaining": remaining, "limit": limit, "finishes_at": iso(slot + days * self.window_ms)}

    # -- direct sends and limit changes ---------------------------------------------------------------------

    async def count_direct_async(self, client: aioredis.Redis, portfolio: str, recipient: str) -> None:
        """Count a direct (API) business-initiated send: never refused, never held."""
        names = self.names
        keys = (names.reached(portfolio), names.limits, names.test_clock)
        argv = (portfolio, UNLIMITED, self.window_ms, "", digest(recipient))
        await client.eval(ADMIT, len(keys), *keys, *argv)  # type: ignore[misc]

    def set_limit(self, client: redis.Redis, portfolio: str, limit: int) -> None:
        """A portfolio's limit changed (a quality or capability update): waiting sends see it at the next
        release."""
        client.hset(self.names.limits, portfolio, str(limit))

    def advance_test_clock(self, client: redis.Redis, seconds: float) -> int:
        """Move the budget's clock ``seconds`` forward (tests; refused unless ``ZAPQ_TEST_CLOCK`` is on); the
        offset now, in ms."""
        if not self.test_clock:
            raise TestClockDisabledError("the budget's test clock is off (ZAPQ_TEST_CLOCK)")
        offset: Any = client.incrby(self.names.test_clock, int(seconds * 1000))
        return int(offset)
