"""A worker SIGKILLed mid-run of 5,000 jobs: every job runs, duplicates stay bounded, recovery is prompt.

Two ``dramatiq tests.faults.kill_app`` workers share 5,000 jobs; once ~1,000 have run, one worker's whole
process tree is SIGKILLed. Its fetched-but-unacked messages (in flight, prefetched, or run but not yet acked by
the group commit) sit in its ack set until the survivor's ``DeadWorkerRecovery`` requeues them, after the
default 15 s heartbeat timeout plus at most one 5 s tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from dramatiq import Message
from sqlalchemy import text

from libs.db.engine import Database
from libs.enqueue import enqueue_many
from libs.settings import Settings
from tests.faults.support import (
    FAULT_BROKER_IDS,
    FAULT_RUNS_QUEUE,
    FAULT_RUNS_TABLE,
    Group,
    dramatiq_argv,
    kill_group,
    logs,
    wait_until,
)

QUEUE = FAULT_RUNS_QUEUE

JOBS = 5_000
KILL_AFTER = 1_000
RECOVERY_LIMIT_S = 30.0
WORKER = ("-p1", "-t8", "-Q", QUEUE)


def scalar(db: Database, sql: str) -> Any:
    """One value from the session database."""
    with db.engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


@pytest.mark.faults
@pytest.mark.timeout(150)
def test_sigkilled_worker_loses_nothing_and_its_jobs_return_promptly(
    settings: Settings, db: Database, rclient: redis.Redis, groups: Callable[..., Group]
) -> None:
    ns = settings.redis_namespace
    broker_ids = f"{ns}:{FAULT_BROKER_IDS}"
    with db.engine.begin() as conn:
        conn.execute(text(FAULT_RUNS_TABLE))
        conn.execute(text("TRUNCATE fault_runs"))
    # Given two workers (default 15 s heartbeat timeout) that have reported their broker ids
    group = groups()
    victim = group.start("kill-victim", dramatiq_argv("tests.faults.kill_app", *WORKER))
    survivor = group.start("kill-survivor", dramatiq_argv("tests.faults.kill_app", *WORKER))
    wait_until(lambda: rclient.hlen(broker_ids) == 2, timeout=30, what="both workers to boot")
    victim_id = rclient.hget(broker_ids, str(victim.pid))
    assert isinstance(victim_id, bytes)
    acks = f"{ns}:__acks__.{victim_id.decode()}.{QUEUE}"

    # And 5,000 jobs enqueued in one transaction
    jobs = (
        Message(queue_name=QUEUE, actor_name="fault_run", args=(), kwargs={"job": n}, options={}) for n in range(JOBS)
    )
    enqueue_many(rclient, ns, jobs)

    # When ~1,000 have run, the victim's whole process tree is SIGKILLed
    wait_until(lambda: scalar(db, "SELECT count(*) FROM fault_runs") >= KILL_AFTER, timeout=60, what="1,000 runs")
    kill_group(victim)
    killed_at = time.monotonic()
    held = rclient.scard(acks)  # frozen now: in flight + prefetched + run-but-unacked
    ran_at_kill = scalar(db, "SELECT count(*) FROM fault_runs")

    # Then the survivor's recovery requeues the victim's messages within 30 s (15 s timeout + a 5 s tick)
    wait_until(lambda: not rclient.exists(acks), timeout=RECOVERY_LIMIT_S + 15, what="the victim's acks requeued")
    recovery_s = time.monotonic() - killed_at

    # And every job ran at least once
    wait_until(
        lambda: scalar(db, "SELECT count(DISTINCT job) FROM fault_runs") == JOBS,
        timeout=60,
        what=lambda: f"all jobs to run\n{logs(group.path)}",
    )
    # And the queue is fully acked (nothing parked anywhere)
    wait_until(lambda: rclient.hlen(f"{ns}:{QUEUE}.msgs") == 0, timeout=15, what="every job acked")
    total = scalar(db, "SELECT count(*) FROM fault_runs")
    duplicates = total - JOBS
    print(
        f"\nSIGKILL: killed after {ran_at_kill} runs; victim held {held} unacked; recovery {recovery_s:.1f} s; "
        f"{duplicates} duplicate run(s) (bound {held}); 0 lost of {JOBS}"
    )
    assert survivor.poll() is None, logs(group.path)
    assert held > 0
    # And duplicates are bounded by what the victim held unacked
    assert 0 <= duplicates <= held
    assert recovery_s < RECOVERY_LIMIT_S
