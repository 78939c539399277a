"""Publishing: give committed events their place in the feed and create their deliveries.

Fact writers only insert ``events`` rows. A publisher (a thread of every event-dispatcher process; one at a
time holds the publish lock) takes the unpublished ones in insertion order and, in one transaction:

1. numbers them — ``seq`` (global, the feed's cursor) and ``company_seq`` (per company, gap-free) — from
   ``event_counters``; an event becomes visible in the feed only with its number, so the feed never shows a
   later event before an earlier one that was still uncommitted;
2. creates one delivery per matching enabled endpoint (``pending`` when it heads its conversation for that
   endpoint, else ``waiting``), under the conversations' advisory locks (:mod:`libs.events.store`);
3. ``NOTIFY zapq_events`` with the last ``seq``, which wakes every API process's feed listener.

After the commit it *kicks* the endpoints that got a pending delivery (:mod:`libs.events.kicks`). A crash at
any point leaves the events unpublished or published with their deliveries; never half of it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from dramatiq import Broker, Middleware

from libs import contracts
from libs.dramatiq_ext import consumed_queues
from libs.events import store

logger = logging.getLogger(__name__)

#: Events numbered per transaction.
DEFAULT_BATCH = 2_000
#: How long an idle publisher waits before looking again (seconds).
DEFAULT_INTERVAL_S = 0.01


@dataclass
class Published:
    """What one publishing transaction did."""

    events: int = 0
    last_seq: int | None = None
    deliveries: int = 0
    #: Endpoints that got a new ``pending`` delivery (their pump must run).
    kick: set[int] = field(default_factory=set)


def publish_once(conn: psycopg.Connection[Any], *, batch: int = DEFAULT_BATCH) -> Published | None:
    """Publish up to ``batch`` events in one transaction; ``None`` when another publisher holds the lock."""
    if conn.execute(store.ANY_UNPUBLISHED).fetchone() is None:
        return Published()  # the idle case: one index probe, no transaction
    with conn.transaction():
        if not conn.execute(store.TRY_PUBLISH_LOCK).fetchone()[0]:  # type: ignore[index]
            return None
        events = conn.execute(store.UNPUBLISHED, {"limit": batch}).fetchall()
        if not events:
            return Published()
        ids = [event_id for event_id, _ in events]
        per_company = Counter(company_id for _, company_id in events)
        companies = [0, *per_company]
        counts = [len(events), *per_company.values()]
        last = dict(conn.execute(store.ADVANCE_COUNTERS, {"companies": companies, "counts": counts}).fetchall())
        next_seq = last[0] - len(events)
        next_company = {company: last[company] - n for company, n in per_company.items()}
        seqs: list[int] = []
        company_seqs: list[int] = []
        for _, company_id in events:
            next_seq += 1
            next_company[company_id] += 1
            seqs.append(next_seq)
            company_seqs.append(next_company[company_id])
        conn.execute(store.SET_SEQUENCES, {"ids": ids, "seqs": seqs, "company_seqs": company_seqs})
        result = Published(events=len(events), last_seq=seqs[-1])
        matches = conn.execute(store.MATCHES, {"ids": ids}).fetchall()
        if matches:
            keys = {(endpoint_id, conversation) for endpoint_id, _, _, conversation in matches}
            conn.execute(store.LOCK_CONVERSATIONS, {"locks": store.lock_keys(keys)})
            created = conn.execute(
                store.INSERT_DELIVERIES,
                {
                    "endpoints": [m[0] for m in matches],
                    "events": [m[1] for m in matches],
                    "seqs": [m[2] for m in matches],
                    "conversations": [m[3] for m in matches],
                },
            ).fetchall()
            result.deliveries = len(created)
            result.kick = {endpoint_id for endpoint_id, state in created if state == "pending"}
        conn.execute(store.NOTIFY_PUBLISHED, {"seq": str(result.last_seq)})
    return result


class Publisher:
    """The publishing loop of one process (a thread): publish while there is work, else look every
    ``interval`` seconds; reconnects after a Postgres outage."""

    def __init__(
        self,
        conninfo: str,
        kick: Callable[[set[int]], None],
        *,
        batch: int = DEFAULT_BATCH,
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.conninfo = conninfo
        self.kick = kick
        self.batch = batch
        self.interval = interval
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self.stopping.clear()
        self._thread = threading.Thread(target=self.run, name="zapq-event-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for it."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        """Publish until stopped (first waking every endpoint with open deliveries: see ``OPEN_ENDPOINTS``)."""
        conn: psycopg.Connection[Any] | None = None
        failing = False
        started = False
        while not self.stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                if not started:
                    self._kick({row[0] for row in conn.execute(store.OPEN_ENDPOINTS).fetchall()})
                    started = True
                result = publish_once(conn, batch=self.batch)
                failing = False
            except psycopg.Error:
                if not failing:  # once per outage
                    logger.warning("cannot publish events: Postgres unavailable", exc_info=True)
                failing = True
                if conn is not None:
                    conn.close()
                conn = None
                self.stopping.wait(1.0)
                continue
            if result is not None and result.kick:
                self._kick(result.kick)
            if result is None or result.events < self.batch:
                self.stopping.wait(self.interval)
        if conn is not None:
            conn.close()

    def _kick(self, endpoint_ids: set[int]) -> None:
        if not endpoint_ids:
            return
        try:
            self.kick(endpoint_ids)
        except Exception:  # Redis down: the sweep kicks endpoints with due deliveries
            logger.warning("could not wake %d endpoint(s) with new deliveries", len(endpoint_ids), exc_info=True)


class PublisherMiddleware(Middleware):
    """Runs a :class:`Publisher` in every worker process of the event dispatcher."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Start publishing once the worker runs, if it consumes the dispatcher's queue."""
        whitelist = consumed_queues(worker)
        if whitelist and contracts.EVENT_DELIVERY not in whitelist:
            return
        self.publisher.start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        """Stop publishing first: what is unpublished stays for the next publisher."""
        self.publisher.stop()
