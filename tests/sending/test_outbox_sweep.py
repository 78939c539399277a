"""The outbox sweeps of sends and campaign expansion: jobs lost by Redis are enqueued again, each message reaches
the provider exactly once, and jobs waiting legitimately — anywhere — are never duplicated."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from starlette.testclient import TestClient

from libs import contracts
from libs.api.app import create_app
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import Lanes
from libs.campaigns.sweep import sweep_expansions
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, MessageStatus
from libs.enqueue import enqueue_many
from libs.jobscan import JobScan, SweepLock
from libs.ops.stats import job_lookup
from libs.sending.jobs import send_job, send_job_id
from libs.sending.sweep import SweepResult, sweep_sends
from libs.settings import Settings
from tests.helpers import drain
from tests.ingest import factories as f
from tests.sending.conftest import eventually, execute, make_connection, make_messages, messages, sends

#: The sweeps as the scheduler runs them, but without the grace period and the wait between the two scans.
NOW = {"grace_seconds": 0, "confirm_after": 0}


def sweep(db: Database, broker: Any, settings: Settings) -> SweepResult:
    """One run of the send sweep."""
    return sweep_sends(db, broker.client, settings.redis_namespace, Lanes(settings.redis_namespace), **NOW)


def make_campaign(
    db: Database, company: int, connection: int, recipients: list[str], *, started_ago_s: int = 600
) -> int:
    """A running campaign with ``recipients`` imported, started ``started_ago_s`` ago; returns its id."""
    with db.session() as session:
        row = Campaign(
            company_id=company,
            connection_id=connection,
            name="spring",
            status=CampaignStatus.RUNNING,
            body="Hi {name}",
            recipients_count=len(recipients),
            started_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=started_ago_s),
        )
        session.add(row)
        session.flush()
        session.execute(
            text(
                "INSERT INTO campaign_recipients (campaign_id, recipient, variables) "
                "SELECT :c, r, jsonb_build_object('name', r) FROM unnest(CAST(:rs AS text[])) AS r"
            ),
            {"c": row.id, "rs": recipients},
        )
        return row.id


def expand_all(db: Database, broker: Any, settings: Settings, campaign_id: int) -> list[int]:
    """Expand every recipient of a campaign into its company's lane (not fed into the queue yet); the ids."""
    with db.session() as session:
        first, last = session.execute(
            text("SELECT min(id), max(id) FROM campaign_recipients WHERE campaign_id = :c"), {"c": campaign_id}
        ).one()
    unfed = Lanes(settings.redis_namespace, buffer=0)
    expand_batch(db, broker.client, unfed, contracts.ExpandCampaignBatch(campaign_id, first, last))
    with db.session() as session:
        rows = session.execute(text("SELECT id FROM messages WHERE campaign_id = :c ORDER BY id"), {"c": campaign_id})
        return [int(r[0]) for r in rows]


def numbers(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API, creating messages into the shared broker."""
    with TestClient(create_app(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def test_jobs_deleted_behind_zapqs_back_are_sent_exactly_once(
    db: Database, broker: Any, settings: Settings, sender: Any, fake_meta: str, api: TestClient
) -> None:
    ns, client = settings.redis_namespace, broker.client
    # Given API messages on the urgent and normal tiers, created through the API (jobs enqueued before commit)
    company, connection = make_connection(db, phone_number_id="106540352242922")
    created = [
        api.post(
            "/api/messages",
            json={"company_id": company, "to": to, "text": "hi", "priority": "urgent" if i % 2 else "normal"},
        ).json()["id"]
        for i, to in enumerate(numbers("1650555", 6))
    ]
    # And one whose job waits in the delay queue (a deferral), to be left alone
    [delayed] = make_messages(db, company, connection, ["16505559999"])
    row = messages(db, [delayed])[0]
    broker.enqueue(send_job(delayed, "normal", row.created_at), delay=1_500)
    # And two companies' running campaigns, their sends waiting in their fair lanes
    lost_company, lost_connection = make_connection(db, phone_number_id="200000000000001")
    kept_company, kept_connection = make_connection(db, phone_number_id="200000000000002")
    lost_sends = expand_all(db, broker, settings, make_campaign(db, lost_company, lost_connection, numbers("5511", 40)))
    kept_sends = expand_all(db, broker, settings, make_campaign(db, kept_company, kept_connection, numbers("5521", 10)))
    # And a third campaign started but whose expansion jobs were lost: nothing expanded
    unexpanded = make_campaign(db, lost_company, lost_connection, numbers("5531", 25))

    # When Redis loses the API messages' queues and the first company's lane (ids and payloads)
    client.delete(f"{ns}:messages", f"{ns}:messages.msgs", f"{ns}:messages.urgent", f"{ns}:messages.urgent.msgs")
    lanes = Lanes(ns)
    lost_ids: Any = client.lrange(lanes.lane(lost_company), 0, -1)
    client.hdel(f"{ns}:messages.low.msgs", *lost_ids)
    client.delete(lanes.lane(lost_company))
    # And the sender and the campaign runner start, and the scheduler's sweeps run (twice: a job is enqueued
    # again only when two scans found it missing)
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=4)
    worker.start()
    try:
        first = sweep(db, broker, settings)
        assert sweep_expansions(db, client, ns, **NOW) == {}  # suspected only
        second = sweep(db, broker, settings)
        assert sweep_expansions(db, client, ns, **NOW) == {unexpanded: 1}
        # Then the lost sends were found missing twice and enqueued again, nothing else
        assert (first.missing, first.enqueued) == (len(created) + len(lost_sends), 0)
        assert second.enqueued == len(created) + len(lost_sends)
        # And every message reaches the provider exactly once
        expected = len(created) + 1 + len(lost_sends) + len(kept_sends) + 25
        eventually(lambda: len(sends(fake_meta)) >= expected, timeout=60)
        drain(broker, worker)
        counts = Counter(int(s["client_ref"]) for s in sends(fake_meta))
        with db.session() as session:
            campaign_three = [
                r[0] for r in session.execute(text("SELECT id FROM messages WHERE campaign_id = :c"), {"c": unexpanded})
            ]
        everything = [*created, delayed, *lost_sends, *kept_sends, *campaign_three]
        assert len(everything) == expected
        assert counts == Counter(everything)
        assert {r.status for r in messages(db, everything)} == {MessageStatus.SENT}
        # And later sweeps find nothing to do
        assert sweep(db, broker, settings).candidates == 0
        assert sweep_expansions(db, client, ns, **NOW) == {}
    finally:
        worker.stop()
        broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]


def test_jobs_waiting_anywhere_are_never_duplicated(db: Database, broker: Any, settings: Settings) -> None:
    ns, client = settings.redis_namespace, broker.client
    company, connection = make_connection(db)
    ids = make_messages(db, company, connection, numbers("1650555", 7))
    waiting, fetched, delayed, fetched_delayed, dead, to_ledger, lost = ids
    running, paused = make_campaign(db, company, connection, []), make_campaign(db, company, connection, [])
    execute(db, "UPDATE campaigns SET status = 'paused' WHERE id = :id", id=paused)
    [in_lane] = make_messages(db, company, connection, ["5511900000001"], priority="low", campaign_id=running)
    [parked] = make_messages(db, company, connection, ["5511900000002"], priority="low", campaign_id=paused)
    ids += [in_lane, parked]
    created = {r.id: r.created_at for r in messages(db, ids)}

    def job(message_id: int, priority: str = "normal") -> Any:
        return send_job(message_id, priority, created[message_id])

    # Given a job in every place a send can legitimately wait
    enqueue_many(client, ns, [job(waiting)])
    enqueue_many(client, ns, [job(fetched, "urgent"), job(dead, "urgent")])
    urgent = broker.consume(contracts.MESSAGES_URGENT, prefetch=2, timeout=100)
    taken = [next(urgent), next(urgent)]  # fetched by a worker: in its ack set
    urgent.nack(next(m for m in taken if m.kwargs["message_id"] == dead))  # dead: in the queue's dead set
    broker.enqueue(job(delayed), delay=3_600_000)
    broker.enqueue(job(fetched_delayed, "urgent"), delay=3_600_000)
    held = broker.consume(f"{contracts.MESSAGES_URGENT}.DQ", prefetch=1, timeout=100)
    assert next(held) is not None  # a worker holds it until due
    lanes = Lanes(ns, buffer=0)
    lanes.push(client, company, [contracts.SEND_LOW.message(contracts.SendMessage(in_lane))])

    async def park() -> None:
        async_client = aioredis.Redis.from_url(settings.redis_url)
        send = contracts.SEND_LOW.message(contracts.SendMessage(parked))
        await lanes.park_async(async_client, paused, company, send)
        await async_client.aclose()

    asyncio.run(park())
    entry = contracts.RecordDeadLetter(
        message=job(to_ledger).asdict(),
        reason="exhausted",
        error_type="libs.errors.TransientError",
        error_message="x",
        traceback=None,
        attempts=5,
        first_failed_at=None,
        last_failed_at=time.time(),
    )
    enqueue_many(client, ns, [contracts.RECORD_DEAD_LETTER.message(entry)])
    # When the scan looks for them
    scan = JobScan(client, ns)
    places = [
        p
        for q in (contracts.MESSAGES_URGENT, contracts.MESSAGES, contracts.MESSAGES_LOW, contracts.DEAD_LETTER)
        for p in scan.queue_places(q, scan.live_workers(), lanes if q == contracts.MESSAGES_LOW else None)
    ]
    # Then it finds every one of them, and not the one Redis never had
    assert scan.values(places, "message_id") == set(ids) - {lost}
    # And the sweep, run twice, enqueues only that one (the paused campaign's send is not even a candidate)
    first, second = sweep(db, broker, settings), sweep(db, broker, settings)
    assert (first.candidates, first.missing, second.missing, second.enqueued) == (8, 1, 1, 1)
    assert scan.values(places, "message_id") == set(ids)
    assert sweep(db, broker, settings).missing == 0
    urgent.close()
    held.close()


def test_a_dead_letter_is_left_to_the_operator(db: Database, broker: Any, settings: Settings) -> None:
    # Given a queued message whose job was dead-lettered (deferred past its budget) and recorded in the ledger
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, ["16505550001"])
    [row] = messages(db, [message_id])
    with db.session() as session:
        session.execute(
            text(
                "INSERT INTO dead_letters (message_id, queue_name, actor_name, args, kwargs, message, reason, "
                "error_type, error_message, attempts, last_failed_at) VALUES (:mid, 'messages', 'send_message', "
                "'[]', CAST(:kwargs AS jsonb), '{}', 'defer_budget', 'libs.errors.Defer', 'x', 0, now())"
            ),
            {
                "mid": send_job(message_id, "normal", row.created_at).message_id,
                "kwargs": f'{{"message_id": {message_id}}}',
            },
        )
    # When the sweep runs twice
    sweep(db, broker, settings)
    second = sweep(db, broker, settings)
    # Then it is not enqueued: replaying it is the operator's call
    assert (second.missing, second.dead, second.enqueued) == (1, 1, 0)
    assert broker.do_qsize(contracts.MESSAGES) == 0


def test_a_sweep_over_100k_waiting_campaign_sends_is_cheap(db: Database, broker: Any, settings: Settings) -> None:
    ns, client = settings.redis_namespace, broker.client
    # Given a running campaign with 100,000 queued sends waiting in its company's lane
    company, connection = make_connection(db)
    campaign = make_campaign(db, company, connection, [])
    with db.session() as session:
        session.execute(
            text(
                "INSERT INTO messages (company_id, connection_id, campaign_id, direction, priority, status, "
                "recipient, body, queued_at, updated_at) SELECT :co, :cn, :ca, 'out', 'low', 'queued', "
                "(5511900000000 + g)::text, 'hi', now(), now() - interval '1 hour' FROM generate_series(1, 100000) g"
            ),
            {"co": company, "cn": connection, "ca": campaign},
        )
        ids = [r[0] for r in session.execute(text("SELECT id FROM messages WHERE campaign_id = :c"), {"c": campaign})]
    Lanes(ns, buffer=0).push(client, company, (contracts.SEND_LOW.message(contracts.SendMessage(i)) for i in ids))
    # When the sweep runs
    started = time.monotonic()
    result = sweep(db, broker, settings)
    elapsed = time.monotonic() - started
    # Then it finds every job where it waits and enqueues nothing, in a couple of seconds
    assert (result.candidates, result.missing, result.enqueued) == (100_000, 0, 0)
    assert elapsed < 10, f"sweep took {elapsed:.2f} s"
    print(f"\nsend sweep over 100,000 waiting sends: {elapsed:.2f} s")


def test_the_periodic_actors_sweep_with_the_configured_grace(
    db: Database, broker: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.scheduler.actors as actors

    monkeypatch.setattr(actors, "settings", settings.model_copy(update={"outbox_sweep_confirm_seconds": 0}))
    # Given a message whose job is missing, unchanged for longer than the grace period, and one just created
    company, connection = make_connection(db)
    old, young = make_messages(db, company, connection, ["16505550001", "16505550002"])
    grace = settings.outbox_sweep_after_seconds
    execute(db, f"UPDATE messages SET updated_at = now() - interval '{grace + 60} seconds' WHERE id = :id", id=old)
    # When the scheduler's sweeps run (twice: the confirmation)
    for _ in range(2):
        actors.sweep_sends.fn()
        actors.sweep_campaigns.fn()
    # Then only the old one is enqueued again, on its tier's queue under its own job id
    [(queue, kwargs)] = [
        (q, k)
        for q in (contracts.MESSAGES, contracts.MESSAGES_URGENT)
        for k in f.queued_kwargs(broker.client, settings.redis_namespace, q)
    ]
    assert (queue, kwargs) == (contracts.MESSAGES, {"message_id": old})
    # And the message's job id (what GET /api/messages/{id} names) is the live job's: `zapq job` finds it waiting
    [row] = messages(db, [old])
    job = job_lookup(broker.client, settings.redis_namespace, send_job_id(old, row.created_at))
    assert (job.state, job.queue) == ("waiting", contracts.MESSAGES)
    assert young != old


def test_one_sweep_at_a_time(db: Database, broker: Any, settings: Settings) -> None:
    # Given a sweep in progress (another scheduler's tick, or a slow run overlapping the next)
    with SweepLock(broker.client, settings.redis_namespace, "sends") as acquired:
        assert acquired
        # Then another one does nothing
        assert sweep(db, broker, settings).skipped
    # And once it ended, the next one runs
    assert not sweep(db, broker, settings).skipped
