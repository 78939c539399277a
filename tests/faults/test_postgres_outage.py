"""Postgres down for ~20 s under ingest: the edge answers 503 meanwhile, queued jobs wait it out, none is lost.

The edge, the ingest worker and the ops worker (dead-letter recorder) run against a Postgres of the test's
own. A backlog of accepted webhooks is queued when Postgres stops, so their jobs hit the outage. A job that
fails with ``DependencyUnavailableError`` is deferred (capped backoff, no attempt consumed) instead of
spending the ``webhooks`` policy's 3 attempts (2 s + 4 s) and being dead-lettered 6 s into the outage.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from sqlalchemy import func, select

from libs.db.engine import Database
from libs.db.models import DeadLetter, Message, Webhook, WebhookStatus
from libs.ops.processes import free_port, wait_http
from libs.settings import Settings
from tests.faults.support import (
    Group,
    dramatiq_argv,
    log_count,
    logs,
    make_connection,
    own_postgres,
    post_webhook,
    uvicorn_argv,
    wait_until,
)

BACKLOG = 300
AFTER = 50
OUTAGE_SECONDS = 20.0
POSTERS = 4


def count(db: Database, model: type, *where: object) -> int:
    """Rows of ``model`` matching ``where``."""
    with db.session() as session:
        return int(session.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_postgres_outage_defers_jobs_and_edge_answers_503(
    settings: Settings, rclient: redis.Redis, groups: Callable[..., Group]
) -> None:
    with own_postgres() as pg:
        db = Database.from_url(pg.url, pool_size=2)
        make_connection(db)
        group = groups(ZAPQ_DATABASE_URL=pg.url)
        try:
            # Given the edge and the ops worker on our own Postgres, and a backlog of accepted webhooks
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            edge = group.start("edge", uvicorn_argv("services.webhook_ingest.app:app", port))
            group.start("ops", dramatiq_argv("services.scheduler", "-p1", "-t2"))
            wait_http(f"{base}/healthz", process=edge)
            answers: list[tuple[str, int, float]] = []
            lock = threading.Lock()

            def post(client: httpx.Client) -> None:
                wamid, status, _ = post_webhook(client, base, settings.meta_app_secret)
                with lock:
                    answers.append((wamid, status, time.monotonic()))

            with httpx.Client(timeout=10) as client:
                for _ in range(BACKLOG):
                    post(client)
            # And the ingest worker working through it
            group.start("ingest", dramatiq_argv("services.webhook_ingest", "-p1", "-t4"))
            wait_until(
                lambda: count(db, Webhook, Webhook.status == WebhookStatus.PROCESSED) >= 20,
                timeout=30,
                what="the ingest worker to start",
            )

            # When Postgres stops for ~20 s while webhooks keep arriving
            pg.stop("fast")
            down = time.monotonic()
            queued_at_stop = rclient.llen(f"{settings.redis_namespace}:webhooks")
            stop_posting = threading.Event()

            def keep_posting() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop_posting.is_set():
                        post(client)

            with ThreadPoolExecutor(POSTERS) as pool:
                for _ in range(POSTERS):
                    pool.submit(keep_posting)
                time.sleep(OUTAGE_SECONDS)  # the outage itself: webhooks keep arriving meanwhile
                stop_posting.set()
            pg.start()
            up = time.monotonic()
            with httpx.Client(timeout=10) as client:
                for _ in range(AFTER):
                    post(client)

            # Then the edge answered 503 during the outage only
            before = Counter(status for _, status, at in answers if at < down)
            during = Counter(status for _, status, at in answers if down <= at <= up)
            after = Counter(status for _, status, at in answers if at > up)
            assert before == {200: BACKLOG}, before
            assert set(during) == {503}, during
            assert after == {200: AFTER}, after

            # And every accepted webhook ends processed, once, with its message stored
            accepted = before[200] + after[200]
            wait_until(
                lambda: count(db, Webhook, Webhook.status == WebhookStatus.PROCESSED) == accepted,
                timeout=90,
                what=lambda: f"every webhook processed: {count(db, Webhook, Webhook.status == WebhookStatus.PROCESSED)}"
                f" of {accepted}\n{logs(group.path)}",
            )
            recovered = time.monotonic() - up
            assert count(db, Webhook) == accepted  # nothing stored for a 503
            assert count(db, Message) == accepted
            # And nothing was dead-lettered because of the outage
            assert count(db, DeadLetter) == 0
            assert rclient.hlen(f"{settings.redis_namespace}:dead-letter.msgs") == 0
            group.stop(grace=10)
            deferred = log_count(group.path, "ms: dependency unavailable")
        finally:
            group.stop(grace=10)
            db.close()
    print(
        f"\nPostgres outage {up - down:.1f} s: {queued_at_stop} jobs queued at the stop; edge answered "
        f"{during[503]} x 503 during it, {BACKLOG} + {AFTER} x 200 before/after; {deferred} deferral(s) of jobs; "
        f"all {accepted} processed {recovered:.1f} s after Postgres returned; 0 dead letters, 0 lost"
    )
