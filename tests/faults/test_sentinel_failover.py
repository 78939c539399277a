"""The Redis primary is SIGKILLed under webhooks and sends; Sentinel promotes the replica; zapq carries on.

A primary, a replica and three sentinels of the test's own (:mod:`tests.faults.sentinels`); the webhook edge,
the ingest worker and the sender reach Redis only through ``ZAPQ_REDIS_SENTINELS`` (their ``ZAPQ_REDIS_URL``
points at a closed port). Webhooks stream in and sends are enqueued in batches; a fifth of the way the primary
is SIGKILLed. Nobody restarts a zapq process. Afterwards — once the outbox sweeps have enqueued again what the
replica never received (replication is asynchronous) — every accepted webhook is processed and stored once, and
the fake Graph API received every message exactly once. Prints the time from the kill to the first job enqueued
on the new primary being done.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select, text

from libs import contracts
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus, Webhook, WebhookStatus
from libs.enqueue import enqueue_many
from libs.ingest.sweep import sweep_webhooks
from libs.ops.processes import free_port, wait_http
from libs.redis_clients import redis_client
from libs.sending.sweep import sweep_sends
from libs.settings import Settings
from tests.faults.sentinels import MASTER, sentinel_set
from tests.faults.support import (
    Group,
    dramatiq_argv,
    logs,
    make_connection,
    post_webhook,
    queued_texts,
    uvicorn_argv,
    wait_until,
)

NUMBERS = ("106540352272001", "106540352272002")
WEBHOOKS = 200
WEBHOOK_PACE_S = 0.01
BATCHES = 30
PER_BATCH = 15
BATCH_PACE_S = 0.1
KILL_AT_BATCH = 6


def fake_sends(fake: str) -> list[dict[str, Any]]:
    """Every send the fake Graph API accepted."""
    return list(httpx.get(f"{fake}/_fake/sends", timeout=10).json())


def snapshot(db: Database) -> tuple[tuple[str, int], ...]:
    """Webhook rows per status and outbound messages per status: changes while the workers work."""
    with db.session() as session:
        hooks = session.execute(select(Webhook.status, func.count()).group_by(Webhook.status)).all()
        sends = session.execute(
            select(Message.status, func.count()).where(Message.direction == Direction.OUTBOUND).group_by(Message.status)
        ).all()
    return tuple(sorted([(f"webhook {s.value}", n) for s, n in hooks] + [(f"send {s.value}", n) for s, n in sends]))


def settled(db: Database, last: list[tuple[tuple[str, int], ...]]) -> bool:
    """True once the counts stopped changing between two polls half a second apart."""
    now = snapshot(db)
    changed = not last or last[-1] != now
    last.append(now)
    if changed:
        time.sleep(0.5)
    return not changed


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_primary_killed_sentinel_promotes_replica_nothing_lost_nothing_sent_twice(
    settings: Settings, db: Database, groups: Callable[..., Group]
) -> None:
    ns = settings.redis_namespace
    make_connection(db)  # the webhooks' number
    connections = [make_connection(db, phone_number_id=number) for number in NUMBERS]
    with db.session() as session:  # the throttle is not what this test is about
        session.execute(text("UPDATE connections SET rate_per_second = 1000"))
    ids = queued_texts(db, connections, 0, BATCHES * PER_BATCH, prefix="272")
    started = time.monotonic()
    with sentinel_set() as ha:
        own = settings.model_copy(
            update={
                "redis_sentinels": ha.sentinels,
                "redis_sentinel_master": MASTER,
                "redis_url": "redis://127.0.0.1:1/0",
            }
        )
        client = redis_client(own, timeout=5)
        fake_port, edge_port = free_port(), free_port()
        fake, base = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{edge_port}"
        # Given the edge, the ingest worker and the sender on the Sentinel set (their Redis URL is a closed port)
        group = groups(
            ZAPQ_REDIS_SENTINELS=ha.sentinels,
            ZAPQ_REDIS_SENTINEL_MASTER=MASTER,
            ZAPQ_REDIS_URL="redis://127.0.0.1:1/0",
            ZAPQ_META_GRAPH_URL=fake,
        )
        fake_process = group.start("fake-meta", ["-m", "tests.fakes.meta", "--port", str(fake_port), "--rate", "0"])
        edge = group.start("edge", uvicorn_argv("services.webhook_ingest.app:app", edge_port))
        group.start("ingest", dramatiq_argv("services.webhook_ingest", "-p1", "-t4"))
        group.start("sender", dramatiq_argv("services.message_sender", "-p1", "-t2"))
        wait_http(f"{fake}/_fake/health", process=fake_process)
        wait_http(f"{base}/healthz", process=edge)
        booted = time.monotonic() - started

        # When webhooks stream in and sends are enqueued, and the primary is SIGKILLed a fifth of the way
        answers: list[tuple[int, int | None]] = []

        def post_all() -> None:
            with httpx.Client(timeout=10) as http:
                for _ in range(WEBHOOKS):
                    _, status, webhook_id = post_webhook(http, base, settings.meta_app_secret)
                    answers.append((status, webhook_id))
                    time.sleep(WEBHOOK_PACE_S)

        poster = threading.Thread(target=post_all)
        poster.start()
        killed_at = promoted_at = 0.0
        refused = 0  # batches Redis did not take: their rows stay queued, the sweep finds them
        after_kill: list[int] = []  # the first batch enqueued after the kill: it is on the new primary
        for batch in range(BATCHES):
            if batch == KILL_AT_BATCH:
                killed_at = ha.kill_primary()
            chunk = ids[batch * PER_BATCH : (batch + 1) * PER_BATCH]
            try:
                enqueue_many(client, ns, (contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in chunk))
            except redis.RedisError:
                refused += 1
            else:
                if killed_at and not after_kill:
                    after_kill = chunk
            time.sleep(BATCH_PACE_S)
            if killed_at and not promoted_at and ha.promoted():
                promoted_at = time.monotonic()
        poster.join(timeout=60)
        assert len(answers) == WEBHOOKS
        wait_until(ha.promoted, timeout=20, what="the replica promoted", interval=0.02)
        promoted = (promoted_at or time.monotonic()) - killed_at
        assert after_kill, "no batch could be enqueued after the failover"

        # Then the first send enqueued on the new primary is done without any process restarted
        first = {str(i) for i in after_kill}
        wait_until(
            lambda: any(send["client_ref"] in first for send in fake_sends(fake)),
            timeout=30,
            what=lambda: f"a send enqueued on the new primary to be done\n{logs(group.path)}",
        )
        done_at = min(send["received_at"] for send in fake_sends(fake) if send["client_ref"] in first)
        kill_to_done = done_at - (time.time() - (time.monotonic() - killed_at))

        # And once the workers have settled, the outbox sweeps enqueue again what the new primary never had
        history: list[tuple[tuple[str, int], ...]] = []
        streamed = time.monotonic() - started
        wait_until(lambda: settled(db, history), timeout=30, what="the workers to settle")
        swept_hooks = sweep_webhooks(db, client, ns, older_than_seconds=0)
        lanes = Lanes(ns)
        sweep_sends(db, client, ns, lanes, grace_seconds=0, confirm_after=0)  # finds the missing: suspects
        swept_sends = sweep_sends(db, client, ns, lanes, grace_seconds=0, confirm_after=0).enqueued  # confirms them

        accepted = {webhook_id for status, webhook_id in answers if status == 200}
        codes = Counter(status for status, _ in answers)

        def processed() -> int:
            with db.session() as session:
                done = select(func.count()).where(Webhook.status == WebhookStatus.PROCESSED)
                return int(session.execute(done).scalar_one())

        def sent() -> int:
            with db.session() as session:
                done = select(func.count()).where(Message.id.in_(ids), Message.status == MessageStatus.SENT)
                return int(session.execute(done).scalar_one())

        wait_until(
            lambda: processed() == len(accepted) and sent() == len(ids),
            timeout=30,
            what=lambda: f"everything done: {snapshot(db)}\n{logs(group.path)}",
        )
        per_message = Counter(send["client_ref"] for send in fake_sends(fake))
        group.stop(grace=10)
        client.close()

    # And every webhook was answered 200 (Postgres was up) and every inbound message stored once
    assert codes == {200: WEBHOOKS}, codes
    with db.session() as session:
        inbound = select(func.count()).select_from(Message).where(Message.direction == Direction.INBOUND)
        assert session.execute(inbound).scalar_one() == WEBHOOKS
    # And the fake Graph API received every message exactly once
    twice = {ref: n for ref, n in per_message.items() if n > 1}
    assert not twice, f"{len(twice)} messages sent more than once"
    assert set(per_message) == {str(i) for i in ids}
    print(
        f"\nSentinel failover: primary SIGKILLed; replica promoted within {promoted:.1f} s; first job enqueued on the "
        f"new primary done {kill_to_done:.1f} s after the kill; {refused} send batch(es) refused during the switch; "
        f"{swept_hooks} webhook(s) and {swept_sends} send(s) enqueued again by the sweeps; {WEBHOOKS} webhooks "
        f"processed and {len(ids)} messages sent, each exactly once (Redis set and processes up after {booted:.0f} s, "
        f"traffic and failover over after {streamed:.0f} s)"
    )
