"""Redis trouble mid-run — paused 20 s, out of memory 15 s, restarted — never hangs or kills a worker.

The real message-sender (``dramatiq services.message_sender``, sending to the fake Meta API) and the real
webhook-ingest worker (``dramatiq services.webhook_ingest``) run against a Redis of the test's own, each with
its heartbeat files in a directory of its own and a 4 s stall limit (``ZAPQ_WORKER_STALL_SECONDS``). Both are
busy — a run of sends throttled to 120/s, a run of stored webhooks — when the fault starts:

* ``pause``: ``CLIENT PAUSE 20000`` (every command of every client waits 20 s);
* ``oom``: ``maxmemory`` 1 byte with ``noeviction`` for 15 s (every write that needs memory fails with OOM);
* ``restart``: ``redis-cli shutdown`` (AOF fsynced), 8 s down, started again on the same files.

Afterwards every message reached the fake provider exactly once and every webhook is processed with its
message stored once; each worker's liveness probe failed while it was stuck and passes again; and new work
sent after the fault is processed (no worker thread was lost).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, insert, select

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus, Provider, Webhook, WebhookSource, WebhookStatus
from libs.enqueue import enqueue_many
from libs.ops import probe
from libs.ops.demo import sample_webhook
from libs.ops.processes import free_port, wait_http
from libs.settings import Settings
from tests.faults.support import (
    NUMBER_ID,
    Group,
    RedisInstance,
    dramatiq_argv,
    logs,
    own_redis,
    queued_texts,
    wait_until,
)
from tests.sending.conftest import make_company_connection

SENDERS = ("106540352243001", "106540352243002", "106540352243003")
#: Sends per second per number (the connection's rate): the run of sends lasts ~SENDS / 120 s.
RATE = 40
SENDS = 1_200
WEBHOOKS = 3_000
#: Work sent after the fault, to show every thread still works.
AFTER = 100
STALL_S = 4
#: A heartbeat older than this fails the probe (the workers write one every STALL_S / 3 s).
PROBE_MAX_AGE_S = 6.0
SENT = {MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ}
#: Which workers are stuck — holding jobs, finishing none — during each fault. Out of memory, Redis still serves
#: reads and scripts whose first write frees memory (acks, the throttle's pruning), so each worker goes on with
#: the jobs it has fetched until its window is empty, then waits for new ones holding nothing: starved, not
#: stuck (a restart would not help; its probe rightly stays green). The ingest worker's jobs write only
#: Postgres (their events are outbox rows), so it is starved too.
STUCK: dict[str, set[str]] = {"pause": {"sender", "ingest"}, "oom": set(), "restart": {"sender", "ingest"}}


def inject(fault: str, own: RedisInstance) -> float:
    """Apply ``fault`` to ``own`` and return once it is over; returns how long it lasted."""
    control = redis.Redis.from_url(own.url, socket_timeout=30)
    start = time.monotonic()
    try:
        if fault == "pause":
            control.execute_command("CLIENT", "PAUSE", 20_000)
            time.sleep(20.0)  # the fault's duration (Redis itself ends the pause)
        elif fault == "oom":
            control.config_set("maxmemory-policy", "noeviction")
            control.config_set("maxmemory", "1")
            time.sleep(15.0)  # the fault's duration
            control.config_set("maxmemory", "0")
        else:
            own.shutdown()
            time.sleep(8.0)  # the fault's duration
            own.start()
    finally:
        control.close()
    return time.monotonic() - start


class ProbeWatch:
    """Every 0.25 s: each worker's liveness probe (by heartbeat directory) and its progress (jobs done)."""

    def __init__(self, dirs: dict[str, Path], progress: dict[str, Callable[[], int]]) -> None:
        self.dirs = dirs
        self.progress = progress
        self.seen: dict[str, list[tuple[float, bool, str, int]]] = {name: [] for name in dirs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProbeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, directory in self.dirs.items():
                healthy, reason = probe.check(str(directory), "worker", PROBE_MAX_AGE_S)
                self.seen[name].append((time.monotonic(), healthy, reason, self.progress[name]()))

    def healthy(self, name: str) -> bool:
        """Whether the last check of ``name`` passed."""
        return bool(self.seen[name]) and self.seen[name][-1][1]

    def longest_stall(self, name: str, start: float, end: float) -> tuple[float, float]:
        """(from, to) of the longest span between ``start`` and ``end`` in which ``name`` finished nothing."""
        samples = [(at, done) for at, _, _, done in self.seen[name] if start <= at <= end]
        best, since = (start, start), start
        for (at, done), (_, previous) in zip(samples[1:], samples, strict=False):
            if done != previous:
                since = at
            elif at - since > best[1] - best[0]:
                best = (since, at)
        return best

    def recovered(self, name: str, end: float) -> tuple[float, float]:
        """Seconds after ``end`` until ``name`` finished a job again, and until its probe passed again."""
        samples = [(at, healthy, done) for at, healthy, _, done in self.seen[name] if at >= end]
        progressed = next((at - end for at, _, done in samples if done > samples[0][2]), float("nan"))
        green = next((at - end for at, healthy, _ in samples if healthy), float("nan"))
        return progressed, green

    def red(self, name: str, start: float, end: float) -> list[tuple[float, str]]:
        """When, and why, the probe of ``name`` failed between ``start`` and ``end``."""
        return [(at, reason) for at, healthy, reason, _ in self.seen[name] if start <= at <= end and not healthy]


def store_webhooks(db: Database, count: int) -> list[int]:
    """``count`` inbound-text webhooks stored as the edge stores them (``enqueued``); their ids."""
    rows = []
    for _ in range(count):
        body = sample_webhook(f"wamid.TROUBLE{uuid.uuid4().hex.upper()}", NUMBER_ID)
        rows.append(
            {
                "source": WebhookSource.META,
                "dedup_key": hashlib.sha256(body).hexdigest(),
                "body": body,
                "status": WebhookStatus.ENQUEUED,
            }
        )
    with db.session() as session:
        return list(session.execute(insert(Webhook).returning(Webhook.id), rows).scalars())


def enqueue_webhooks(client: redis.Redis, namespace: str, ids: list[int]) -> None:
    """One ``process_webhook`` job per id."""
    enqueue_many(client, namespace, (contracts.PROCESS_WEBHOOK.message(contracts.ProcessWebhook(i)) for i in ids))


def enqueue_sends(client: redis.Redis, namespace: str, ids: list[int]) -> None:
    """One ``send_message`` job per id."""
    enqueue_many(client, namespace, (contracts.SEND_NORMAL.message(contracts.SendMessage(i)) for i in ids))


def sent_count(db: Database, ids: list[int]) -> int:
    """Messages among ``ids`` the sender recorded as sent."""
    with db.session() as session:
        return int(
            session.execute(
                select(func.count()).select_from(Message).where(Message.id.in_(ids), Message.status.in_(SENT))
            ).scalar_one()
        )


def webhook_statuses(db: Database) -> Counter[str]:
    """Webhook rows per status."""
    with db.session() as session:
        rows = session.execute(select(Webhook.status, func.count()).group_by(Webhook.status)).all()
    return Counter({status.value: count for status, count in rows})


def inbound_stored(db: Database) -> int:
    """Inbound messages stored."""
    with db.session() as session:
        return int(
            session.execute(
                select(func.count()).select_from(Message).where(Message.direction == Direction.INBOUND)
            ).scalar_one()
        )


@pytest.mark.faults
@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", ["pause", "oom", "restart"])
def test_redis_trouble_neither_hangs_nor_kills_a_worker(
    fault: str, settings: Settings, db: Database, groups: Callable[..., Group], tmp_path: Path
) -> None:
    ns = settings.redis_namespace
    connections = [
        make_company_connection(
            db, provider=Provider.META, phone_number_id=number, access_token="fake-meta-token", rate_per_second=RATE
        )[1]
        for number in SENDERS
    ]
    make_company_connection(db, provider=Provider.META, phone_number_id=NUMBER_ID, access_token="fake-meta-token")
    with own_redis() as own:
        client = redis.Redis.from_url(own.url)
        fake_port = free_port()
        fake = f"http://127.0.0.1:{fake_port}"
        roots = {"sender": tmp_path / "hb-sender", "ingest": tmp_path / "hb-ingest"}
        dirs = {name: root / ns for name, root in roots.items()}  # each stack's own (Settings.stack_heartbeat_dir)
        common = {"ZAPQ_REDIS_URL": own.url, "ZAPQ_WORKER_STALL_SECONDS": str(STALL_S)}
        # Given the fake Meta API, the message-sender and the webhook-ingest worker on our own Redis
        fakes = groups()
        fake_process = fakes.start("fake-meta", ["-m", "tests.fakes.meta", "--port", str(fake_port), "--rate", "0"])
        sender = groups(**common, ZAPQ_META_GRAPH_URL=fake, ZAPQ_HEARTBEAT_DIR=str(roots["sender"]))
        sender.start("sender", dramatiq_argv("services.message_sender", "-p1", "-t4"))
        ingest = groups(**common, ZAPQ_HEARTBEAT_DIR=str(roots["ingest"]))
        ingest.start("ingest", dramatiq_argv("services.webhook_ingest", "-p1", "-t4"))
        wait_http(f"{fake}/_fake/health", process=fake_process)
        log_dir = sender.path

        def described() -> str:
            return f"{webhook_statuses(db)}, {sent_count(db, sends)} sent\n{logs(log_dir)}"

        wait_until(
            lambda: all(probe.check(str(d), "worker", PROBE_MAX_AGE_S)[0] for d in dirs.values()),
            timeout=60,
            what="both workers to boot",
        )

        # And both busy: a run of sends (throttled to 120/s) and a run of stored webhooks
        sends = queued_texts(db, connections, 0, SENDS, prefix="020")
        hooks = store_webhooks(db, WEBHOOKS)
        enqueue_sends(client, ns, sends)
        enqueue_webhooks(client, ns, hooks)
        wait_until(
            lambda: sent_count(db, sends) >= SENDS // 10
            and webhook_statuses(db).get(WebhookStatus.PROCESSED.value, 0) >= WEBHOOKS // 20,
            timeout=60,
            what=described,
        )
        before = (sent_count(db, sends), webhook_statuses(db).get(WebhookStatus.PROCESSED.value, 0))

        progress = {
            "sender": lambda: sent_count(db, sends),
            "ingest": lambda: webhook_statuses(db).get(WebhookStatus.PROCESSED.value, 0),
        }
        with ProbeWatch(dirs, progress) as watch:
            # When Redis is paused, out of memory or restarted mid-run
            fault_start = time.monotonic()
            lasted = inject(fault, own)
            fault_end = time.monotonic()

            # Then every send and every webhook is done, and each worker's probe is green again
            wait_until(
                lambda: sent_count(db, sends) == SENDS
                and webhook_statuses(db).get(WebhookStatus.PROCESSED.value, 0) == WEBHOOKS,
                timeout=60,
                interval=0.25,
                what=described,
            )
            drained = time.monotonic() - fault_end
            wait_until(lambda: all(watch.healthy(name) for name in dirs), timeout=30, what="both probes green")
            stalls = {name: watch.longest_stall(name, fault_start, fault_end) for name in dirs}
            red = {name: watch.red(name, fault_start, fault_end + 2.0) for name in dirs}
            red_before = {name: watch.red(name, 0, fault_start) for name in dirs}
            recovery = {name: watch.recovered(name, fault_end) for name in dirs}

            # And new work after the fault is processed: no worker thread was lost
            more_sends = queued_texts(db, connections, SENDS, AFTER, prefix="020")
            more_hooks = store_webhooks(db, AFTER)
            after_start = time.monotonic()
            enqueue_sends(client, ns, more_sends)
            enqueue_webhooks(client, ns, more_hooks)
            wait_until(
                lambda: sent_count(db, more_sends) == AFTER
                and webhook_statuses(db).get(WebhookStatus.PROCESSED.value, 0) == WEBHOOKS + AFTER,
                timeout=30,
                what=described,
            )
            new_work = time.monotonic() - after_start
            assert all(watch.healthy(name) for name in dirs), {n: watch.seen[n][-1] for n in dirs}
        sender.stop(grace=10)
        ingest.stop(grace=10)

    # And each message reached the provider exactly once, each webhook's message was stored once
    fake_sends = httpx.get(f"{fake}/_fake/sends", timeout=5).json()
    per_message = Counter(send["client_ref"] for send in fake_sends)
    assert {ref: n for ref, n in per_message.items() if n > 1} == {}
    assert set(per_message) == {str(i) for i in [*sends, *more_sends]}
    assert webhook_statuses(db) == {WebhookStatus.PROCESSED.value: WEBHOOKS + AFTER}
    assert inbound_stored(db) == WEBHOOKS + AFTER
    # And the probe of each worker that was stuck (holding jobs, finishing none) failed during the fault, and
    # never before it while the workers were busy
    summary = []
    for name in dirs:
        (stuck_from, stuck_to), reds = stalls[name], red[name]
        assert red_before[name] == [], red_before[name]
        during = [(at, reason) for at, reason in reds if fault_start < at <= fault_end + 2.0]
        if name in STUCK[fault]:
            assert during, f"{name} finished nothing for {stuck_to - stuck_from:.1f} s, yet its probe never failed"
            summary.append(
                f"{name} probe red {during[0][0] - fault_start:.1f} s into the fault "
                f"({during[0][1].split(': ', 1)[-1][:58]!r})"
            )
        else:
            summary.append(f"{name} probe {'red' if during else 'green'} (longest pause {stuck_to - stuck_from:.1f} s)")
        progressed, green_again = recovery[name]
        summary[-1] += f", a job done {progressed:.1f} s and probe green {green_again:.1f} s after the fault"
    print(
        f"\nRedis {fault} ({lasted:.1f} s) during {SENDS} sends and {WEBHOOKS} webhooks "
        f"({before[0]} sent, {before[1]} processed before it): {'; '.join(summary)}; "
        f"the whole run done {drained:.1f} s after the fault; {AFTER} new sends and webhooks done in "
        f"{new_work:.1f} s; {len(fake_sends)} provider sends, 0 duplicates"
    )
