"""Worker module of the SIGKILL test: zapq's broker (the ops service's) plus one sync actor that records runs.

Run as ``python -m dramatiq tests.faults.kill_app -p1 -t8 -Q fault-runs`` with the session's environment
(the test itself never imports this module).
Each run of ``fault_run(job)`` inserts ``(job, pid)`` into ``fault_runs`` in the session database. At import
(in the forked worker process) the module notes which broker id the process heartbeats under, keyed by its
Dramatiq main process's pid, so the test can find a killed worker's ack sets.
"""

from __future__ import annotations

import os
import time

import dramatiq
from sqlalchemy import text

from services.scheduler import broker, resources, settings
from tests.faults.support import FAULT_BROKER_IDS, FAULT_RUNS_QUEUE

INSERT = text("INSERT INTO fault_runs (job, pid) VALUES (:job, :pid)")
#: Each job holds its thread this long, so a worker always has jobs in flight when it is killed.
JOB_SECONDS = 0.002

broker.client.hset(f"{settings.redis_namespace}:{FAULT_BROKER_IDS}", str(os.getppid()), broker.broker_id)


@dramatiq.actor(actor_name="fault_run", queue_name=FAULT_RUNS_QUEUE, broker=broker)
def fault_run(job: int) -> None:
    """Record one execution of ``job`` by this process."""
    time.sleep(JOB_SECONDS)
    with resources.db.session() as session:
        session.execute(INSERT, {"job": job, "pid": os.getpid()})
