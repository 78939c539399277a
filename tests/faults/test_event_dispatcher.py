"""The event dispatcher under faults: SIGKILLed mid-delivery, and a Redis that loses everything.

Real ``dramatiq services.event_dispatcher`` processes deliver to a fake CRM on loopback that verifies every
signature. Deliveries are rows in Postgres; what a fault takes away (a process, Redis's contents) is found
there again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import pytest
import redis
from dramatiq import Message
from sqlalchemy import text

from libs import contracts
from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.events.signing import new_secret
from libs.ingest.process import process_webhook
from libs.settings import Settings
from tests.fakes.crm import CrmConfig, CrmReceiver
from tests.fakes.server import running_app
from tests.faults.support import Group, dramatiq_argv, kill_group, logs, own_redis, wait_until
from tests.ingest import factories as f

NUMBER_ID = "pn-dispatch-faults"
#: The dispatchers' retry schedule in these tests (the production shape, faster).
SCHEDULE = "200ms,500ms,1s,2s,2s,2s,2s,2s,2s,2s"
DISPATCHER = ("-p1", "-t2")


def company_and_endpoint(db: Database, url: str, secret: str) -> int:
    """A company with a Meta connection on ``NUMBER_ID`` and one endpoint; the endpoint id."""
    company_id = f.company(db)
    f.meta_connection(db, company_id, number_id=NUMBER_ID)
    with db.session() as session:
        return int(
            session.execute(
                text(
                    "INSERT INTO webhook_endpoints (company_id, url, secret, max_in_flight) "
                    "VALUES (:company, :url, :secret, 32) RETURNING id"
                ),
                {"company": company_id, "url": url, "secret": secret},
            ).scalar_one()
        )


def customers_write(db: Database, count: int, *, senders: int = 10, first: int = 0) -> None:
    """``count`` inbound texts from ``senders`` customers, one webhook each (``message.received`` events)."""
    for n in range(first, first + count):
        sender = f"55119{n % senders:08d}"
        body = f.meta_payload(
            f.meta_change(
                number_id=NUMBER_ID, messages=[f.meta_message(f"wamid.K{n}", "text", {"body": f"{n}"}, sender=sender)]
            )
        )
        process_webhook(db, f.webhook_row(db, f.dumps(body)))


def in_order(receiver: CrmReceiver) -> bool:
    """Whether every conversation's events arrived in the order they were written."""
    by_contact: dict[str, list[int]] = {}
    for delivery in receiver.received:
        by_contact.setdefault(delivery.data["contact"]["wa_id"], []).append(int(delivery.data["text"]))
    return all(numbers == sorted(numbers) for numbers in by_contact.values())


def delivering(db: Database) -> int:
    with db.session() as session:
        return int(
            session.execute(text("SELECT count(*) FROM event_deliveries WHERE state = 'delivering'")).scalar_one()
        )


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_sigkilled_dispatcher_loses_nothing_and_redelivers_with_the_same_webhook_id(
    settings: Settings, db: Database, rclient: redis.Redis, groups: Callable[..., Group]
) -> None:
    secret = new_secret()
    # A CRM that takes 400 ms to answer, so many deliveries are in flight at any moment
    receiver = CrmReceiver(CrmConfig(secrets=[secret], latency_ms=400))
    with running_app(receiver.app) as url:
        company_and_endpoint(db, url + "/hooks", secret)
        # Given 300 events of 10 conversations, and a dispatcher delivering them
        customers_write(db, 300)
        group = groups(ZAPQ_EVENT_RETRY_SCHEDULE=SCHEDULE)
        victim = group.start("dispatcher-victim", dramatiq_argv("services.event_dispatcher", *DISPATCHER))
        wait_until(
            lambda: len(receiver.received) >= 30 and delivering(db) > 0,
            timeout=60,
            what=lambda: f"deliveries under way ({len(receiver.received)})\n{logs(group.path)}",
        )
        # When its whole process tree is SIGKILLed mid-delivery
        kill_group(victim)
        killed_at = time.monotonic()
        in_flight_at_kill = delivering(db)
        received_at_kill = len(receiver.received)
        assert in_flight_at_kill > 0
        # And another dispatcher starts
        group.start("dispatcher-survivor", dramatiq_argv("services.event_dispatcher", *DISPATCHER))
        receiver.wait_for(300, timeout=120)
        recovered_s = time.monotonic() - killed_at
    # Then every event arrived (each verified), in order per conversation, and none is still open
    assert receiver.refused == 0
    assert len({d.webhook_id for d in receiver.received}) == 300
    assert in_order(receiver)
    assert delivering(db) == 0
    # And what was re-sent after the kill carried the webhook-id it had before (the receiver's dedup key)
    duplicates = [wid for wid in receiver.arrivals if receiver.arrivals.count(wid) > 1]
    assert set(duplicates) <= {d.webhook_id for d in receiver.received}
    print(
        f"\nSIGKILL with {in_flight_at_kill} deliveries in flight after {received_at_kill} of 300: all 300 delivered "
        f"{recovered_s:.1f} s after the kill; {len(set(duplicates))} delivered twice (same webhook-id)"
    )


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_redis_losing_everything_loses_no_event(settings: Settings, db: Database, groups: Callable[..., Group]) -> None:
    secret = new_secret()
    receiver = CrmReceiver(CrmConfig(secrets=[secret], status=503))
    ns = settings.redis_namespace
    with own_redis() as own, running_app(receiver.app) as url:
        client = redis.Redis.from_url(own.url)
        company_and_endpoint(db, url + "/hooks", secret)
        env = {"ZAPQ_REDIS_URL": own.url, "ZAPQ_EVENT_RETRY_SCHEDULE": "1s,5s,5s,5s,5s,5s,5s,5s,5s"}
        group = groups(**env)
        group.start("dispatcher", dramatiq_argv("services.event_dispatcher", *DISPATCHER))
        ops = group.start("ops-worker", dramatiq_argv("services.scheduler", "-p1", "-t2"))
        # Given events whose deliveries the CRM refuses (503): they wait for their next attempt
        customers_write(db, 40)
        wait_until(lambda: receiver.attempts >= 10, timeout=60, what=lambda: f"attempts\n{logs(group.path)}")
        # When Redis dies and comes back empty (no persistence: every job, kick and wake-up is gone)
        wake_ups = f"{ns}:{contracts.EVENT_DELIVERY}.DQ.msgs"
        scheduled = set(client.hkeys(wake_ups))
        own.kill()
        for leftover in own.root.glob("appendonly*"):
            shutil.rmtree(leftover, ignore_errors=True)
        own.start()
        # the scheduled wake-ups are gone (the running dispatcher may already have scheduled new ones)
        assert not scheduled & set(client.hkeys(wake_ups))
        # And the CRM is fine again, and more events arrive meanwhile
        receiver.config.status = 200
        customers_write(db, 20, first=40)
        # And the scheduler's minute tick of the delivery sweep runs (periodiq sends it; here we do)
        tick = Message(
            queue_name=contracts.MAINTENANCE, actor_name="sweep_event_deliveries", args=(), kwargs={}, options={}
        )
        enqueue_many(client, ns, [tick])
        # Then every event is delivered, in order per conversation

        def state() -> str:
            queues = {q: client.llen(f"{ns}:{q}") for q in (contracts.MAINTENANCE, contracts.EVENT_DELIVERY)}
            with db.session() as session:
                states = session.execute(text("SELECT state, count(*) FROM event_deliveries GROUP BY state")).all()
            keys = sorted(k.decode() for k in client.scan_iter(match=f"{ns}:*"))
            seen = f"{len(receiver.received)} delivered; queues {queues}; deliveries {states}; keys {keys}"
            return f"{seen}\n{logs(group.path)}"

        wait_until(lambda: len(receiver.received) >= 60, timeout=90, what=state)
        assert len({d.webhook_id for d in receiver.received}) == 60
        assert in_order(receiver)
        assert ops.poll() is None
        client.close()
