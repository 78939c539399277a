"""Postgres blinks under a sender with many sends in flight: every message reaches the provider exactly once.

A real ``dramatiq services.message_sender`` process talks to Postgres through a TCP proxy of the test's own
(:mod:`tests.faults.tcp_proxy`) and sends to the fake Graph API (``python -m tests.fakes.meta``, 1 s per
answer, so many sends are at the provider at any moment). While it works through the messages:

* ``reset``: every Postgres connection is reset and new ones are refused for a while — the sends the
  provider accepts meanwhile cannot be recorded (their record fails, the pool times out), their jobs are
  deferred with the rows still ``sending``, and the claim takes those rows back after the reconcile window
  (2 s here). Before the provider's answers were journaled, each of them was sent a second time.
* ``stall``: connections are held open and nothing is forwarded for a while, then everything flows again.

Afterwards every row is ``sent`` with the id of its one send, and the fake counted each message once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Message, MessageStatus
from libs.enqueue import enqueue_many
from libs.ops.processes import free_port, wait_http
from libs.settings import Settings
from tests.faults.support import Group, dramatiq_argv, log_count, logs, make_connection, queued_texts, wait_until
from tests.faults.tcp_proxy import tcp_proxy

NUMBERS = ("106540352243001", "106540352243002", "106540352243003", "106540352243004")
MESSAGES = 1_500
#: Sends waiting for the provider's answer when the fault starts: their records are what the fault hits.
IN_FLIGHT_AT_FAULT = 64
#: Longer than the sender's pool timeout (10 s): records waiting for a connection give up.
FAULT_SECONDS = 20.0
RECONCILE_SECONDS = 2
LATENCY_MS = 1_000


def states(db: Database, ids: list[int]) -> dict[int, tuple[MessageStatus, str | None]]:
    """id → (status, provider id)."""
    with db.session() as session:
        rows = session.execute(select(Message.id, Message.status, Message.external_id).where(Message.id.in_(ids)))
        return {row[0]: (row[1], row[2]) for row in rows}


def at_provider(sends: list[dict[str, Any]]) -> int:
    """Sends the fake received but has not answered yet (it answers each after ``LATENCY_MS``)."""
    since = time.time() - LATENCY_MS / 1000 * 0.8
    return sum(1 for send in sends if send["received_at"] > since)


def fake_sends(fake: str) -> list[dict[str, Any]]:
    """Every send the fake Graph API accepted."""
    return list(httpx.get(f"{fake}/_fake/sends", timeout=10).json())


@pytest.mark.faults
@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["reset", "stall"])
def test_postgres_blink_during_sends_sends_each_message_exactly_once(
    settings: Settings, db: Database, rclient: redis.Redis, groups: Callable[..., Group], fault: str
) -> None:
    ns = settings.redis_namespace
    connections = [make_connection(db, phone_number_id=number) for number in NUMBERS]
    with db.session() as session:  # the throttle is not what this test is about
        session.execute(text("UPDATE connections SET rate_per_second = 1000"))
    ids = queued_texts(db, connections, 0, MESSAGES, prefix="020")
    database = make_url(settings.sqlalchemy_url)
    assert database.port is not None or database.host is not None
    with tcp_proxy(database.host or "127.0.0.1", database.port or 5432) as proxy:
        fake_port = free_port()
        fake = f"http://127.0.0.1:{fake_port}"
        through_proxy = database.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        group = groups(
            ZAPQ_DATABASE_URL=through_proxy,
            ZAPQ_META_GRAPH_URL=fake,
            ZAPQ_SEND_RECONCILE_SECONDS=str(RECONCILE_SECONDS),
        )
        # Given the fake Graph API (1 s per answer, no rate limit) and a sender reaching Postgres via the proxy
        fake_process = group.start(
            "fake-meta",
            ["-m", "tests.fakes.meta", "--port", str(fake_port), "--rate", "0", "--latency-ms", str(LATENCY_MS)],
        )
        wait_http(f"{fake}/_fake/health", process=fake_process)
        group.start("sender", dramatiq_argv("services.message_sender", "-p1", "-t2"))
        # And 1,500 sends under way, dozens of them at the provider
        enqueue_many(rclient, ns, (contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in ids))
        wait_until(
            lambda: at_provider(fake_sends(fake)) >= IN_FLIGHT_AT_FAULT,
            timeout=60,
            what=lambda: f"{IN_FLIGHT_AT_FAULT} sends at the provider at once\n{logs(group.path)}",
        )
        # When Postgres blinks under them: connections reset and refused, or held open and silent
        at_fault = len(fake_sends(fake))
        if fault == "reset":
            reset = proxy.reset_and_refuse()
        else:
            proxy.stall()
        time.sleep(FAULT_SECONDS)  # the fault itself: a period of time the sender must live through
        during = len(fake_sends(fake)) - at_fault
        proxy.restore()

        # Then every message ends sent
        wait_until(
            lambda: all(status == MessageStatus.SENT for status, _ in states(db, ids).values()),
            timeout=120,
            interval=0.5,
            what=lambda: f"every message sent: {Counter(s for s, _ in states(db, ids).values())}\n{logs(group.path)}",
        )
        # And the provider got each message exactly once, and each row carries the id of that one send
        accepted = fake_sends(fake)
        per_message = Counter(send["client_ref"] for send in accepted)
        twice = {ref: n for ref, n in per_message.items() if n > 1}
        assert not twice, f"{len(twice)} messages sent more than once (at the fault: {at_fault} sent)"
        assert set(per_message) == {str(i) for i in ids}
        wamid = {send["client_ref"]: send["wamid"] for send in accepted}
        assert {i: external for i, (_, external) in states(db, ids).items()} == {i: wamid[str(i)] for i in ids}
        # And nothing was dead-lettered
        assert rclient.hlen(f"{ns}:{contracts.DEAD_LETTER}.msgs") == 0
        group.stop(grace=10)
        journaled = log_count(group.path, "before its record failed")
    what = f"{reset} connections reset, new ones refused" if fault == "reset" else "connections stalled"
    print(
        f"\nPostgres {fault} for {FAULT_SECONDS:.0f} s ({what}) with {MESSAGES - at_fault} sends left: "
        f"{during} accepted by the provider during the fault; {journaled} recorded from the journal after their "
        f"record failed; all {MESSAGES} sent, each exactly once"
    )
