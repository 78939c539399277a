"""Redis restarted while webhooks stream in: every webhook answered 200 ends processed; none is lost.

The edge, the ingest worker and the ops worker run against a Redis of the test's own (AOF, ``appendfsync
everysec``) and the session's Postgres. Mid-stream Redis is shut down with ``redis-cli shutdown`` (which
fsyncs the AOF), left down for a few seconds and started again on the same files. The edge keeps answering
200 (Postgres is up) and leaves the rows it could not enqueue in ``received``; the outbox sweep enqueues them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
import redis
from sqlalchemy import func, select

from libs.db.engine import Database
from libs.db.models import Message, Webhook, WebhookStatus
from libs.ingest.sweep import sweep_webhooks
from libs.ops.processes import free_port, wait_http
from libs.settings import Settings
from tests.faults.support import (
    Group,
    dramatiq_argv,
    log_count,
    logs,
    make_connection,
    own_redis,
    post_webhook,
    uvicorn_argv,
    wait_until,
)

WEBHOOKS = 400
RESTART_AT = 100
DOWN_SECONDS = 3.0
PACE_SECONDS = 0.01


def statuses(db: Database) -> Counter[str]:
    """Webhook rows per status."""
    with db.session() as session:
        rows = session.execute(select(Webhook.status, func.count()).group_by(Webhook.status)).all()
    return Counter({status.value: count for status, count in rows})


def settled(db: Database, last: list[Counter[str]]) -> bool:
    """True once the status counts stopped changing between two polls a second apart."""
    now = statuses(db)
    changed = not last or last[-1] != now
    last.append(now)
    if changed:
        time.sleep(1.0)
    return not changed


@pytest.mark.faults
@pytest.mark.timeout(150)
def test_redis_restart_during_ingest_loses_no_webhook(
    settings: Settings, db: Database, groups: Callable[..., Group]
) -> None:
    make_connection(db)
    with own_redis() as own:
        # Given the edge, the ingest worker and the ops worker on our own Redis
        group = groups(ZAPQ_REDIS_URL=own.url)
        port = free_port()
        edge = group.start("edge", uvicorn_argv("services.webhook_ingest.app:app", port))
        group.start("ingest", dramatiq_argv("services.webhook_ingest", "-p1", "-t4"))
        group.start("ops", dramatiq_argv("services.scheduler", "-p1", "-t2"))
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", process=edge)

        # When signed webhooks stream in and Redis is restarted (AOF fsynced on shutdown) a quarter of the way
        outage: dict[str, float] = {}

        def restart() -> None:
            own.shutdown()
            outage["down"] = time.monotonic()
            time.sleep(DOWN_SECONDS)
            own.start()
            outage["up"] = time.monotonic()

        restarter = threading.Thread(target=restart)
        answers: list[tuple[str, int, int | None, float]] = []
        with httpx.Client(timeout=10) as client:
            for n in range(WEBHOOKS):
                if n == RESTART_AT:
                    restarter.start()
                wamid, status, webhook_id = post_webhook(client, base, settings.meta_app_secret)
                answers.append((wamid, status, webhook_id, time.monotonic()))
                time.sleep(PACE_SECONDS)
        restarter.join(timeout=30)
        assert "up" in outage, "redis did not come back"
        during = sum(1 for *_, at in answers if outage["down"] <= at <= outage["up"])

        # Then every webhook was answered 200 (Postgres was up all along)
        codes = Counter(status for _, status, _, _ in answers)
        assert codes == {200: WEBHOOKS}, codes

        # And once the workers have settled, the outbox sweep enqueues what the edge could not enqueue
        history: list[Counter[str]] = []
        wait_until(lambda: settled(db, history), timeout=60, what="the workers to settle")
        swept = sweep_webhooks(db, redis.Redis.from_url(own.url), settings.redis_namespace, older_than_seconds=0)
        accepted = {webhook_id for _, status, webhook_id, _ in answers if status == 200}
        wait_until(
            lambda: statuses(db).get(WebhookStatus.PROCESSED.value, 0) == len(accepted),
            timeout=60,
            what=lambda: f"every webhook processed (now {dict(statuses(db))})\n{logs(group.path)}",
        )
        group.stop(grace=10)  # before its Redis goes away
        waited = log_count(group.path, "while Redis is down; waiting")
        orphans = log_count(group.path, "fetched by this worker but never run")

    # And each inbound message is stored exactly once
    with db.session() as session:
        stored = session.execute(select(func.count()).select_from(Message)).scalar_one()
    print(
        f"\nRedis restart: {WEBHOOKS} webhooks, {during} posted while Redis was down "
        f"({outage['up'] - outage['down']:.1f} s), all answered 200; "
        f"{swept} needed the sweep; {waited} failed job(s) waited for Redis to schedule their retry; "
        f"{orphans} orphan requeue(s) by a live worker; {len(accepted)} processed, 0 lost; {stored} messages stored"
    )
    assert stored == WEBHOOKS
