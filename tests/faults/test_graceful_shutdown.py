"""SIGTERM to each worker type under load: in-flight jobs finish, prefetched ones go back, nothing is lost.

The webhook-ingest, message-sender and campaign-runner workers each get a backlog; once each has made some
progress its Dramatiq main process gets one SIGTERM (as an orchestrator sends it). Each must exit 0 within
the grace period with none of its messages left in its ack sets (finished and acked, or requeued), and a
fresh worker must then finish every job, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
import redis
from dramatiq import Message as DramatiqMessage
from sqlalchemy import func, select, text

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, Direction, Message, MessageStatus, Webhook, WebhookStatus
from libs.enqueue import enqueue_many
from libs.ops.processes import free_port, wait_http
from libs.settings import Settings
from libs.whatsapp import meta_dedup_key
from tests.faults.support import Group, dramatiq_argv, logs, make_connection, queued_texts, wait_until
from tests.ingest import factories as f

GRACE_S = 30.0
WEBHOOKS, ITEMS_PER_WEBHOOK = 400, 5
SENDS = 600
BATCHES, PER_BATCH = 50, 200
NUMBERS = ("106540352243001", "106540352243002", "106540352243003")


@dataclass
class Stopped:
    """How one worker took its SIGTERM."""

    name: str
    returncode: int | None
    seconds: float
    held_at_term: int
    in_flight_at_term: int


def scalar(db: Database, query: object) -> int:
    """One integer from the database."""
    with db.session() as session:
        return int(session.execute(query).scalar_one())  # type: ignore[call-overload]


def held(client: redis.Redis, namespace: str, queues: tuple[str, ...]) -> int:
    """Messages fetched but not acked, by any worker, on ``queues`` (and their delay queues)."""
    total = 0
    for key in client.scan_iter(match=f"{namespace}:__acks__.*", count=1000):
        name = key.decode().split(".", 1)[1]
        if any(name.endswith(f".{q}") or name.endswith(f".{q}.DQ") for q in queues):
            total += int(client.scard(key))
    return total


def held_kwargs(client: redis.Redis, namespace: str, queues: tuple[str, ...]) -> list[object]:
    """What :func:`held` counts: the held messages' kwargs (for failure messages)."""
    found: list[object] = []
    for key in client.scan_iter(match=f"{namespace}:__acks__.*", count=1000):
        queue = key.decode().rsplit(".", 1)[-1]
        for member in client.smembers(key):
            data = client.hget(f"{namespace}:{queue}.msgs", member)
            found.append((key, DramatiqMessage.decode(data).asdict() if data else None))
    return found


INSERT_WEBHOOK = """
INSERT INTO webhooks (source, dedup_key, body, status) VALUES (%s, %s, %s, 'received')
ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id
"""


def store_webhooks(db: Database, count: int) -> list[int]:
    """Accepted webhook rows (as the edge stores them), ``ITEMS_PER_WEBHOOK`` inbound texts each."""
    ids = []
    with db.engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for n in range(count):
            items = [
                f.meta_message(f"wamid.TERM{n}.{k}", "text", {"body": "hi"}, sender=f"1555030{n:04d}")
                for k in range(ITEMS_PER_WEBHOOK)
            ]
            body = f.dumps(f.meta_payload(f.meta_change(f.NUMBER_ID, messages=items)))
            row = raw.execute(INSERT_WEBHOOK, ("meta", meta_dedup_key(body), body)).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def campaign(db: Database, connection_id: int) -> tuple[int, list[contracts.ExpandCampaignBatch]]:
    """A running text campaign with ``BATCHES × PER_BATCH`` recipients, and its expansion batches."""
    with db.session() as session:
        company_id = session.execute(text(f"SELECT company_id FROM connections WHERE id = {connection_id}")).scalar()
        row = Campaign(
            company_id=company_id,
            connection_id=connection_id,
            name="term",
            status=CampaignStatus.RUNNING,
            body="hi {name}",
            recipients_count=BATCHES * PER_BATCH,
        )
        session.add(row)
        session.flush()
        session.execute(
            text(
                "INSERT INTO campaign_recipients (campaign_id, recipient, variables, expanded) "
                "SELECT :c, '1555' || lpad(g::text, 7, '0'), '{}'::jsonb, false FROM generate_series(1, :n) g"
            ),
            {"c": row.id, "n": BATCHES * PER_BATCH},
        )
        ids = list(
            session.execute(
                text("SELECT id FROM campaign_recipients WHERE campaign_id = :c ORDER BY id"), {"c": row.id}
            ).scalars()
        )
    batches = [
        contracts.ExpandCampaignBatch(row.id, ids[i], ids[i + PER_BATCH - 1]) for i in range(0, len(ids), PER_BATCH)
    ]
    return row.id, batches


def terminate(process: subprocess.Popen[bytes]) -> tuple[int | None, float]:
    """One SIGTERM to Dramatiq's main process; its exit code and how long it took (None: still running)."""
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    try:
        code: int | None = process.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_sigterm_under_load_finishes_in_flight_and_requeues_the_rest(
    settings: Settings, db: Database, rclient: redis.Redis, groups: Callable[..., Group]
) -> None:
    ns = settings.redis_namespace
    fake_port = free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    group = groups(ZAPQ_META_GRAPH_URL=fake)
    log_dir = group.path
    fake_process = group.start("fake-meta", ["-m", "tests.fakes.meta", "--port", str(fake_port), "--latency-ms", "300"])
    make_connection(db)  # f.NUMBER_ID: the inbound webhooks' number
    connections = [make_connection(db, phone_number_id=number) for number in NUMBERS]
    wait_http(f"{fake}/_fake/health", process=fake_process)

    # Given a backlog for each worker type
    webhook_ids = store_webhooks(db, WEBHOOKS)
    send_ids = queued_texts(db, connections, 0, SENDS, prefix="020")
    campaign_id, batches = campaign(db, connections[0])
    enqueue_many(
        rclient,
        ns,
        [
            *(contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(i)) for i in webhook_ids),
            *(contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in send_ids),
            *(contracts.EXPAND_CAMPAIGN_BATCH.message(batch) for batch in batches),
        ],
    )
    workers = {
        "webhook-ingest": ("services.webhook_ingest", "-p1", "-t4"),
        # Only the normal tier: the campaign's low-tier sends are not part of this test.
        "message-sender": ("services.message_sender", "-p1", "-t2", "-Q", contracts.MESSAGES),
        "campaign-runner": ("services.campaign_runner", "-p1", "-t2"),
    }
    queues = {
        "webhook-ingest": (contracts.WEBHOOKS,),
        "message-sender": (contracts.MESSAGES,),
        "campaign-runner": (contracts.CAMPAIGNS,),
    }
    processed = select(func.count()).select_from(Webhook).where(Webhook.status == WebhookStatus.PROCESSED)
    sent = (
        select(func.count()).select_from(Message).where(Message.status == MessageStatus.SENT, Message.id.in_(send_ids))
    )
    sending = select(func.count()).select_from(Message).where(Message.status == MessageStatus.SENDING)
    expanded = select(func.count()).select_from(Message).where(Message.campaign_id == campaign_id)
    progress = {
        "webhook-ingest": lambda: scalar(db, processed) >= WEBHOOKS // 5,
        "message-sender": lambda: scalar(db, sent) >= SENDS // 5,
        "campaign-runner": lambda: scalar(db, expanded) >= BATCHES * PER_BATCH // 5,
    }

    # When each worker, once it has done a fifth of its backlog, gets one SIGTERM to its main process
    stopped: list[Stopped] = []
    for name, argv in workers.items():
        process = group.start(name, dramatiq_argv(*argv))
        wait_until(progress[name], timeout=60, what=lambda name=name: f"{name} to make progress\n{logs(log_dir)}")  # type: ignore[misc]
        at_term = held(rclient, ns, queues[name])
        in_flight = scalar(db, sending) if name == "message-sender" else 0
        code, seconds = terminate(process)
        stopped.append(Stopped(name, code, seconds, at_term, in_flight))

    # Then each exited 0 within the grace period, holding nothing: in-flight work finished, the rest requeued
    for stop in stopped:
        assert stop.returncode == 0, f"{stop}\n{logs(log_dir)}"
        assert stop.seconds < GRACE_S
        assert held(rclient, ns, queues[stop.name]) == 0, (stop, held_kwargs(rclient, ns, queues[stop.name]))
    assert scalar(db, sending) == 0  # every send in flight at the SIGTERM was completed and recorded
    left = {name: sum(rclient.llen(f"{ns}:{q}") for q in queues[name]) for name in workers}

    # And fresh workers finish every job, once
    for name, argv in workers.items():
        group.start(f"{name}-again", dramatiq_argv(*argv))
    wait_until(
        lambda: scalar(db, processed) == WEBHOOKS
        and scalar(db, sent) == SENDS
        and scalar(db, expanded) == BATCHES * PER_BATCH,
        timeout=90,
        interval=0.25,
        what=lambda: f"every job done: {scalar(db, processed)} webhooks, {scalar(db, sent)} sends, "
        f"{scalar(db, expanded)} campaign messages\n{logs(log_dir)}",
    )
    inbound = select(func.count()).select_from(Message).where(Message.direction == Direction.INBOUND)
    assert scalar(db, inbound) == WEBHOOKS * ITEMS_PER_WEBHOOK
    per_message = Counter(send["client_ref"] for send in httpx.get(f"{fake}/_fake/sends", timeout=5).json())
    assert set(per_message.values()) == {1} and len(per_message) == SENDS
    print(
        "\nSIGTERM: "
        + "; ".join(
            f"{s.name} rc {s.returncode} in {s.seconds:.1f} s, held {s.held_at_term} at TERM"
            + (f" ({s.in_flight_at_term} sends in flight, all completed)" if s.name == "message-sender" else "")
            + f", 0 after, {left[s.name]} waiting"
            for s in stopped
        )
        + f"; after restart all {WEBHOOKS} webhooks, {SENDS} sends (each once), {BATCHES} batches done; 0 lost"
    )
