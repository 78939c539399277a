"""Poison guard with a real SIGKILL: a job that kills its worker is dead-lettered after 3 deliveries.

Real ``dramatiq`` worker subprocesses in this session's namespace: an ops worker (the dead-letter recorder)
and a worker for ``test-poison`` that a supervisor loop restarts whenever it dies. Recovery of the killed
worker's unacked messages relies on :class:`DeadWorkerRecovery` with a 2 s heartbeat timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from dramatiq import Message
from sqlalchemy import select

from libs.db.engine import Database
from libs.db.models import DeadLetter
from libs.middleware.poison import delivery_key
from libs.settings import Settings
from tests.middleware.poison_app import QUEUE
from tests.middleware.support import Processes, dramatiq_argv, subprocess_env, to_utc, wait_until

HEARTBEAT_TIMEOUT_MS = 2_000
BUDGET_S = 90
#: A job that kills its worker before the worker reported "ready" leaves Dramatiq's main process waiting
#: ``--worker-fork-timeout`` (30 s by default) before it notices the death; 1 s keeps the supervisor prompt.
WORKER_OPTIONS = ("-p1", "-t1", "-Q", QUEUE, "--worker-fork-timeout", "1000")


def dead_letter_of(db: Database, message_id: str) -> DeadLetter | None:
    """The ledger row of ``message_id``, if recorded."""
    with db.session() as session:
        return session.execute(select(DeadLetter).where(DeadLetter.message_id == message_id)).scalar_one_or_none()


def supervise(processes: Processes, env: dict[str, str], finished: Callable[[], bool]) -> list[float]:
    """Start the single-threaded ``test-poison`` worker, and again whenever it dies, until ``finished()``;
    the start times."""
    deadline = time.monotonic() + BUDGET_S
    starts: list[float] = []
    while not finished():
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"not finished in {BUDGET_S} s\n{processes.logs()}"
        assert len(starts) < 8, f"restarted {len(starts)} times without finishing\n{processes.logs()}"
        starts.append(time.time())
        worker = processes.start("poison-worker", dramatiq_argv("tests.middleware.poison_app", *WORKER_OPTIONS), env)
        wait_until(
            lambda w=worker: w.poll() is not None or finished(),  # type: ignore[misc]
            timeout=max(remaining, 0.1),
            what="the worker to die or the test's end state",
        )
        # Dramatiq's main process exits 1 when a worker was killed (2 would be an import error, 3 no broker)
        assert worker.poll() in (None, 1), f"worker exited with {worker.returncode}\n{processes.logs()}"
    return starts


@pytest.mark.slow
@pytest.mark.timeout(BUDGET_S + 30)
def test_worker_killing_job_is_dead_lettered_after_three_deaths(
    settings: Settings, db: Database, broker: Any, processes: Processes
) -> None:
    client, keys = broker.client, f"{settings.redis_namespace}:{QUEUE}"
    env = subprocess_env(ZAPQ_HEARTBEAT_TIMEOUT_MS=str(HEARTBEAT_TIMEOUT_MS))
    # Given the ops worker (dead-letter recorder) running
    processes.start("ops", dramatiq_argv("services.scheduler", "-p1", "-t2"), env)
    # And a poison job enqueued before three normal jobs on the same queue
    poison = broker.enqueue(Message(queue_name=QUEUE, actor_name="test_poison_kill", args=(), kwargs={}, options={}))
    for n in (1, 2, 3):
        broker.enqueue(Message(queue_name=QUEUE, actor_name="test_poison_normal", args=(n,), kwargs={}, options={}))

    def finished() -> bool:
        done = {int(x) for x in client.smembers(f"{keys}:done")}
        return done == {1, 2, 3} and dead_letter_of(db, poison.message_id) is not None

    # When a supervisor loop restarts the single-threaded queue worker every time it dies
    starts = supervise(processes, env, finished)

    # Then the job killed its worker three times and the fourth delivery dead-lettered it as worker_died
    kills = [float(x) for x in client.lrange(f"{keys}:kills", 0, -1)]
    assert len(kills) == 3, processes.logs()
    assert len(starts) == 4, processes.logs()
    row = dead_letter_of(db, poison.message_id)
    assert row is not None
    assert (row.queue_name, row.actor_name, row.reason) == (QUEUE, "test_poison_kill", "worker_died")
    assert row.error_type == "WorkerDied"
    assert row.attempts == 3
    assert row.error_message == "the worker died 3 times while running this job"
    # And its delivery counter is gone, and every normal job completed
    assert not client.exists(delivery_key(broker, poison.message_id))
    assert {int(x) for x in client.smembers(f"{keys}:done")} == {1, 2, 3}

    # Recovery time: SIGKILL → next delivery of the job (the redelivery after the last kill is the one the
    # guard skips, stamped by the dead letter's last_failed_at).
    deliveries = [float(x) for x in client.lrange(f"{keys}:deliveries", 0, -1)]
    redelivered = [*deliveries[1:], row.last_failed_at.timestamp()]
    recoveries = [after - killed for killed, after in zip(kills, redelivered, strict=True)]
    restarts = [start - killed for killed, start in zip(kills, starts[1:], strict=True)]
    print(
        "\npoison guard: SIGKILL → redelivery (s):",
        ", ".join(f"{r:.2f}" for r in recoveries),
        "| of which SIGKILL → supervisor restart:",
        ", ".join(f"{r:.2f}" for r in restarts),
    )
    assert row.last_failed_at >= to_utc(kills[-1])
    for recovery in recoveries:
        # heartbeat timeout + a recovery tick (2/3 s) + worker boot, with slack for a loaded machine
        assert HEARTBEAT_TIMEOUT_MS / 1000 <= recovery < 15, recoveries


INNOCENTS = 12


@pytest.mark.slow
@pytest.mark.timeout(BUDGET_S + 30)
def test_one_poison_job_among_concurrent_jobs_is_singled_out(
    settings: Settings, db: Database, broker: Any, processes: Processes
) -> None:
    client, keys = broker.client, f"{settings.redis_namespace}:{QUEUE}"
    env = subprocess_env(ZAPQ_HEARTBEAT_TIMEOUT_MS=str(HEARTBEAT_TIMEOUT_MS))
    # Given the ops worker (dead-letter recorder) running
    processes.start("ops", dramatiq_argv("services.scheduler", "-p1", "-t2"), env)

    # And twelve concurrent jobs and one that kills its process while they are in flight with it, all taken by
    # one worker thread as one batch
    def normal(n: int) -> Message[Any]:
        return broker.enqueue(
            Message(queue_name=QUEUE, actor_name="test_poison_concurrent_normal", args=(n,), kwargs={}, options={})
        )

    innocent = [normal(n) for n in range(INNOCENTS // 2)]
    poison = broker.enqueue(
        Message(queue_name=QUEUE, actor_name="test_poison_concurrent_kill", args=(), kwargs={}, options={})
    )
    innocent += [normal(n) for n in range(INNOCENTS // 2, INNOCENTS)]

    def finished() -> bool:  # every job completed or dead-lettered
        done = {int(x) for x in client.smembers(f"{keys}:done")}
        with db.session() as session:
            dead = set(session.execute(select(DeadLetter.message_id)).scalars())
        return poison.message_id in dead and all(
            n in done or message.message_id in dead for n, message in enumerate(innocent)
        )

    # When a supervisor loop restarts the worker every time it dies
    starts = supervise(processes, env, finished)

    # Then only the poison job was dead-lettered, as worker_died after killing its worker three times
    kills = client.llen(f"{keys}:kills")
    innocents_dead = [n for n, message in enumerate(innocent) if dead_letter_of(db, message.message_id) is not None]
    assert innocents_dead == [], processes.logs()
    row = dead_letter_of(db, poison.message_id)
    assert row is not None
    assert (row.actor_name, row.reason, row.attempts) == ("test_poison_concurrent_kill", "worker_died", 3)
    assert kills == 3, processes.logs()
    # And every innocent job of its batch completed, and no delivery counter is left behind
    assert {int(x) for x in client.smembers(f"{keys}:done")} == set(range(INNOCENTS))
    wait_until(
        lambda: not any(client.exists(delivery_key(broker, m.message_id)) for m in [*innocent, poison]),
        timeout=10,
        what="the delivery counters to be dropped with the acks",
    )
    print(f"\nconcurrent poison: {kills} kills, {len(starts)} worker starts, {INNOCENTS} innocent jobs completed")
