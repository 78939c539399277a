"""The pull feed and the live stream: published events in ``seq`` order, after a cursor.

The cursor is the event's ``seq`` (as a string): it only grows, and an event gets it at publication, when
everything before it is already visible, so reading "after cursor c" never skips an event that appears later.

One :class:`EventHub` per API process listens on Postgres (``LISTEN zapq_events``, notified by the
publisher with the last ``seq``) and fans out: long-polls and streams wait on the hub instead of polling
Postgres each; while any of them is waiting, the hub itself reads each batch of new events once and keeps the
latest ones in memory, where the streams and long-polls take theirs from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from libs.events import store
from libs.events.types import event_id

logger = logging.getLogger(__name__)

#: Events the hub keeps in memory (the newest ones).
RECENT = 10_000
#: Largest page of the feed.
MAX_LIMIT = 1_000
#: Longest long-poll (seconds).
MAX_WAIT_S = 30.0


class BadCursorError(ValueError):
    """A cursor that is not one this feed handed out."""


def parse_cursor(value: str | None, *, default: int = 0) -> int:
    """A cursor as its ``seq``; ``BadCursorError`` for anything else."""
    if value is None or value == "":
        return default
    text = value.strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadCursorError(f"bad cursor {value!r}: use the cursor of an event (or of a page)")
    return int(text)


def as_event(row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``events`` as the feed returns it (:class:`libs.events.types.EventOut`)."""
    return {
        "id": event_id(row["id"]),
        "type": row["type"],
        "company_id": row["company_id"],
        "sequence": row["company_seq"],
        "cursor": str(row["seq"]),
        "conversation": row["conversation"],
        "occurred_at": row["occurred_at"],
        "data": row["data"],
    }


@dataclass(frozen=True)
class Filter:
    """Which events a reader wants."""

    company_id: int | None = None
    types: tuple[str, ...] = ()

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` (a row) passes."""
        return (self.company_id is None or event["company_id"] == self.company_id) and (
            not self.types or event["type"] in self.types
        )


@dataclass(frozen=True)
class Page:
    """Events after a cursor, and the cursor to continue from."""

    events: list[dict[str, Any]]
    next_cursor: int
    has_more: bool


async def read_page(pool: AsyncConnectionPool[Any], after: int, flt: Filter, limit: int) -> Page:
    """Up to ``limit`` events after ``after`` from Postgres.

    When the page is not full, the next cursor moves past everything published before the query (events
    the filter skipped need not be scanned again).
    """
    params: dict[str, Any] = {"after": after, "limit": limit}
    query = store.feed_query(_where(flt, params), newest_first=False)
    published, rows = await _published_and_rows(pool, query, params)
    full = len(rows) == limit
    last = rows[-1]["seq"] if rows else after
    return Page(rows, last if full else max(last, published), full)


async def read_last(pool: AsyncConnectionPool[Any], flt: Filter, limit: int) -> Page:
    """The newest ``limit`` events that pass ``flt`` (oldest first), and the cursor past everything published
    before the query: where a reader that wants only what is recent starts, in one backward index scan however
    long the log is (a dashboard opening on 30 days of events)."""
    params: dict[str, Any] = {"after": 0, "limit": limit}
    query = store.feed_query(_where(flt, params), newest_first=True)
    published, rows = await _published_and_rows(pool, query, params)
    rows.reverse()
    return Page(rows, max(rows[-1]["seq"] if rows else 0, published), False)


def _where(flt: Filter, params: dict[str, Any]) -> str:
    """The condition selecting events after ``%(after)s`` that pass ``flt`` (its values put in ``params``)."""
    conditions = ["seq > %(after)s"]
    if flt.company_id is not None:
        conditions.append("company_id = %(company)s")
        params["company"] = flt.company_id
    if flt.types:
        conditions.append("type = ANY(%(types)s)")
        params["types"] = list(flt.types)
    return " AND ".join(conditions)


async def _published_and_rows(
    pool: AsyncConnectionPool[Any], query: str, params: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """The last published ``seq``, then the rows of ``query`` (read after it, so they cover at least it)."""
    async with pool.connection() as conn:
        counter = conn.cursor(row_factory=tuple_row)
        await counter.execute(store.LAST_SEQ)
        published = int((await counter.fetchone() or (0,))[0])
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(query, params)
        return published, await cursor.fetchall()


class EventHub:
    """One Postgres listener per process; waiters and the newest events, shared by every reader."""

    def __init__(self, conninfo: str, pool: AsyncConnectionPool[Any]) -> None:
        self.conninfo = conninfo
        self.pool = pool
        #: Highest ``seq`` known to be published.
        self.last_seq = 0
        #: The newest events (rows, ``seq`` order) read since readers started waiting, and the ``seq`` they
        #: cover from (exclusive): an event with a greater ``seq`` is in ``recent`` if it passes no filter.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.recent_from: int | None = None
        self.readers = 0
        #: Reads of Postgres for readers (their first page, or one older than memory) and for new events.
        self.pg_reads = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening (in a task of the running loop)."""
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(store.LISTEN_PUBLISHED)
                    await self._advance(await self._published(conn))
                    async for notify in conn.notifies(timeout=5.0):
                        await self._advance(int(notify.payload or 0))
                    # no notification for 5 s: look anyway (a notification can only be lost with the connection)
                    await self._advance(await self._published(conn))
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event feed listener lost Postgres; reconnecting", exc_info=True)
                self.recent.clear()
                self.recent_from = None  # events published meanwhile were not read: readers go to Postgres
                await asyncio.sleep(1.0)

    @staticmethod
    async def _published(conn: psycopg.AsyncConnection[Any]) -> int:
        row = await (await conn.execute(store.LAST_SEQ)).fetchone()
        return int(row[0]) if row else 0

    async def _advance(self, seq: int) -> None:
        if seq <= self.last_seq:
            return
        if self.readers:
            await self._read_new(seq)
        else:
            self.recent.clear()
            self.recent_from = None
        async with self._changed:
            self.last_seq = max(self.last_seq, seq)
            self._changed.notify_all()

    async def _read_new(self, upto: int) -> None:
        """Read the events in (last known, upto] once, for every waiting reader."""
        start = self.recent_from if self.recent_from is not None else self.last_seq
        if self.recent_from is None:
            self.recent.clear()
            self.recent_from = start
        after = self.recent[-1]["seq"] if self.recent else start
        while after < upto:
            self.pg_reads += 1
            page = await read_page(self.pool, after, Filter(), MAX_LIMIT)
            self.recent.extend(r for r in page.events if r["seq"] <= upto)
            if not page.events or page.events[-1]["seq"] >= upto:
                break
            after = page.events[-1]["seq"]
        if self.recent and len(self.recent) == self.recent.maxlen:
            self.recent_from = self.recent[0]["seq"] - 1

    def from_memory(self, after: int, flt: Filter, limit: int) -> Page | None:
        """A page from the newest events kept here, or ``None`` when ``after`` is older than what they cover."""
        if self.recent_from is None or after < self.recent_from:
            return None
        events = [e for e in self.recent if e["seq"] > after and flt.matches(e)][:limit]
        full = len(events) == limit
        last = events[-1]["seq"] if events else after
        return Page(events, last if full else max(last, self.last_seq), full)

    async def wait_beyond(self, seq: int, timeout: float) -> bool:
        """Wait until an event after ``seq`` is published (True) or ``timeout`` passes (False)."""
        if self.last_seq > seq:
            return True
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.last_seq > seq), timeout)
            except TimeoutError:
                return False
        return True

    async def page(self, after: int, flt: Filter, limit: int) -> Page:
        """Events after ``after``: from memory when the hub holds them, else from Postgres."""
        page = self.from_memory(after, flt, limit)
        if page is None:
            self.pg_reads += 1
            page = await read_page(self.pool, after, flt, limit)
        return page

    async def wait_page(self, after: int, flt: Filter, limit: int, wait_s: float) -> Page:
        """:meth:`page`, waiting up to ``wait_s`` for a first matching event (a long poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        self.readers += 1
        try:
            while True:
                page = await self.page(after, flt, limit)
                left = deadline - loop.time()
                if page.events or left <= 0:
                    return page
                after = page.next_cursor
                await self.wait_beyond(after, left)
        finally:
            self.readers -= 1

    async def follow(self, after: int, flt: Filter, *, batch: int = 500) -> Any:
        """Every event after ``after``, as it is published (an async generator, for the stream)."""
        self.readers += 1
        try:
            while True:
                page = await self.page(after, flt, batch)
                for event in page.events:
                    yield event
                after = page.next_cursor
                if not page.has_more:
                    await self.wait_beyond(after, MAX_WAIT_S)
        finally:
            self.readers -= 1


def types_filter(value: str | None) -> tuple[str, ...]:
    """``"a,b"`` → ``("a", "b")`` (empty: every type)."""
    return tuple(t.strip() for t in (value or "").split(",") if t.strip())
