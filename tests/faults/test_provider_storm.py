"""A provider storm: 500s, 130429 bursts, hangs and a latency spike — every message ends sent or dead-lettered,
throttling costs no attempt, and no message is sent twice.

Processes: a fake Meta Graph API (``python -m tests.fakes.meta``) that posts status webhooks back to our edge,
the edge + ingest worker (to apply them), the ops worker (dead-letter recorder) and the message-sender
(``tests.faults.sender_app``: 2 s provider read timeout, 10 s reconcile window). Messages use the real
``messages`` policy (5 attempts, 3 → 6 → 12 → 24 s).

* Phase 1 (100 messages): only forced 130429s. Each is a deferral: every message ends with ``attempts == 1``.
* Phase 2 (200 messages): ``error_rate`` 0.5 (HTTP 500, code 131000), more 130429s, forced ``"timeout"``
  hangs (the client gives up after 2 s, the fake then drops the request: nothing was sent, the sender waits
  out its reconcile window before sending again) and a latency spike (the fake accepts and reports the send
  by webhook but answers after the client gave up: the webhook reconciles the message, it is not resent).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from libs import contracts
from libs.db.engine import Database
from libs.db.models import DeadLetter, Message, MessageStatus
from libs.enqueue import enqueue_many
from libs.ops.processes import free_port, wait_http
from libs.settings import Settings
from tests.faults.support import (
    Group,
    dramatiq_argv,
    log_count,
    logs,
    make_connection,
    queued_texts,
    uvicorn_argv,
    wait_until,
)

NUMBERS = ("106540352242001", "106540352242002", "106540352242003")
THROTTLE_ONLY = 100
STORM = 200
SENT = {MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ}
FINAL = {*SENT, MessageStatus.FAILED}


def configure(fake: str, **config: Any) -> dict[str, Any]:
    """Change the fake's behaviour; returns its config (with the forced errors still queued)."""
    response = httpx.post(f"{fake}/_fake/config", json=config, timeout=5)
    response.raise_for_status()
    return dict(response.json())


def states(db: Database, ids: list[int]) -> dict[int, tuple[MessageStatus, int, str | None]]:
    """id → (status, attempts, external id)."""
    with db.session() as session:
        rows = session.execute(
            select(Message.id, Message.status, Message.attempts, Message.external_id).where(Message.id.in_(ids))
        ).all()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def dead_letters(db: Database) -> dict[int, DeadLetter]:
    """Send dead letters by message id."""
    with db.session() as session:
        rows = session.execute(select(DeadLetter)).scalars().all()
    return {int(row.kwargs["message_id"]): row for row in rows if "message_id" in row.kwargs}


def enqueue(client: redis.Redis, namespace: str, ids: list[int]) -> None:
    """One ``send_message`` job per id, in one transaction."""
    enqueue_many(client, namespace, (contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in ids))


@pytest.mark.faults
@pytest.mark.timeout(240)
def test_provider_storm_sends_each_message_at_most_once(
    settings: Settings, db: Database, rclient: redis.Redis, groups: Callable[..., Group]
) -> None:
    ns = settings.redis_namespace
    connections = [make_connection(db, phone_number_id=number) for number in NUMBERS]
    edge_port, fake_port = free_port(), free_port()
    edge, fake = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{fake_port}"
    group = groups(ZAPQ_META_GRAPH_URL=fake)
    # Given the fake Meta API posting status webhooks to our edge, and every worker involved
    fake_process = group.start(
        "fake-meta",
        ["-m", "tests.fakes.meta", "--port", str(fake_port), "--webhook-url", f"{edge}/webhooks/meta",
         "--app-secret", settings.meta_app_secret],
    )  # fmt: skip
    edge_process = group.start("edge", uvicorn_argv("services.webhook_ingest.app:app", edge_port))
    group.start("ingest", dramatiq_argv("services.webhook_ingest", "-p1", "-t4"))
    group.start("ops", dramatiq_argv("services.scheduler", "-p1", "-t2"))
    group.start("sender", dramatiq_argv("tests.faults.sender_app", "-p1", "-t4"))
    wait_http(f"{fake}/_fake/health", process=fake_process)
    wait_http(f"{edge}/healthz", process=edge_process)
    log_dir = group.path

    # When 100 messages meet only 130429 bursts
    burst = 40
    configure(fake, forced_errors=[130429] * burst)
    calm = queued_texts(db, connections, 0, THROTTLE_ONLY, prefix="010")
    enqueue(rclient, ns, calm)
    wait_until(
        lambda: all(status in SENT for status, _, _ in states(db, calm).values()),
        timeout=60,
        what=lambda: f"the throttled messages to be sent\n{logs(log_dir)}",
    )
    throttled = burst - len(configure(fake)["forced_errors"])
    # Then throttling consumed no attempt
    assert throttled > 0
    assert Counter(attempts for _, attempts, _ in states(db, calm).values()) == {1: THROTTLE_ONLY}

    # When 200 more meet 50 % HTTP 500s, 130429 bursts and hangs longer than the sender's read timeout
    forced: list[Any] = [*[130429] * 10, *["timeout"] * 4, *[130429] * 10, *["timeout"] * 4]
    configure(fake, error_rate=0.5, hang_ms=3_000, forced_errors=forced)
    storm = queued_texts(db, connections, THROTTLE_ONLY, STORM, prefix="010")
    enqueue(rclient, ns, storm)
    # And, for a moment, answers that come after the sender gave up (the send itself was accepted)
    wait_until(
        lambda: len(httpx.get(f"{fake}/_fake/sends", timeout=5).json()) >= THROTTLE_ONLY + 40,
        timeout=60,
        what="40 storm sends",
    )
    spike_from = time.time()
    configure(fake, latency_ms=2_500)
    time.sleep(1.0)  # the spike: sends accepted now are answered after the client's 2 s read timeout
    configure(fake, latency_ms=0)
    spike_to = time.time()

    # Then every message ends sent, or failed with an 'exhausted' dead letter; none is stuck
    everything = calm + storm

    def settled() -> bool:
        current = states(db, everything)
        failed = {i for i, (status, _, _) in current.items() if status == MessageStatus.FAILED}
        return all(status in FINAL for status, _, _ in current.values()) and failed <= set(dead_letters(db))

    wait_until(
        settled,
        timeout=150,
        interval=0.5,
        what=lambda: f"every message final: {Counter(s for s, _, _ in states(db, everything).values())}\n"
        f"{logs(log_dir)}",
    )
    final = states(db, everything)
    letters = dead_letters(db)
    failed = {i for i, (status, _, _) in final.items() if status == MessageStatus.FAILED}
    assert set(letters) == failed
    assert {(row.reason, row.attempts) for row in letters.values()} <= {("exhausted", 5)}
    assert all(final[i][2] is not None for i in set(everything) - failed)

    # And the fake saw each message at most once (an unconfirmed send is reconciled, never resent)
    sends = httpx.get(f"{fake}/_fake/sends", timeout=5).json()
    per_message = Counter(send["client_ref"] for send in sends)
    twice = {ref: n for ref, n in per_message.items() if n > 1}
    assert not twice, twice
    assert {str(i) for i in set(everything) - failed} <= set(per_message)
    spiked = [s for s in sends if spike_from <= s["received_at"] <= spike_to + 0.5]
    timeouts = log_count(log_dir, "failed: ProviderTimeoutError")
    print(
        f"\nProvider storm: {len(everything)} messages: {len(everything) - len(failed)} sent, {len(failed)} failed "
        f"+ dead-lettered (exhausted, 5 attempts); {throttled} x 130429 in phase 1 cost no attempt; "
        f"{timeouts} ambiguous timeout(s); {len(spiked)} send(s) accepted during the latency spike reconciled by "
        f"webhook; {len(sends)} provider sends, 0 duplicates; 0 stuck"
    )
