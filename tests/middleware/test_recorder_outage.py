"""Postgres down when a job finally fails: the dead letter waits in Redis and is recorded once it is back.

Uses a Postgres instance of its own (initdb + pg_ctl on a free port; the shared one is never touched) and an
ops worker subprocess pointed at it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Message

from libs import contracts
from libs.db.engine import Database
from libs.db.migrate import upgrade
from libs.middleware.deadletter import FAILURES
from libs.ops.processes import free_port
from tests.middleware.support import Probe, Processes, dramatiq_argv, ledger_rows, subprocess_env, wait_until

PG_BIN = Path(os.environ.get("ZAPQ_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresInstance:
    """A throw-away Postgres cluster in a temp directory, run as the ``postgres`` user when we are root."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/zapq_outage"

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stdout}\n{done.stderr}")

    def initdb(self) -> None:
        """Create the cluster (trust auth, no fsync)."""
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"
        )

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop and wait until it is down."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def own_postgres() -> Iterator[PostgresInstance]:
    """A migrated Postgres of this test's own; stopped and deleted afterwards."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no Postgres binaries in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="zapq-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    instance = PostgresInstance(root, free_port())
    try:
        instance.initdb()
        instance.start()
        upgrade(instance.url)
        yield instance
    finally:
        with contextlib.suppress(RuntimeError):  # already stopped (or never started)
            instance.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def recorder_failures(broker: Any) -> int:
    """Highest failure count among the dead-letter recorder's messages still in Redis."""
    counts = [0]
    for key in (f"{contracts.DEAD_LETTER}.msgs", f"{contracts.DEAD_LETTER}.DQ.msgs"):
        for data in broker.client.hvals(f"{broker.namespace}:{key}"):
            counts.append(Message.decode(data).options.get(FAILURES, 0))
    return max(counts)


def waiting_dead_letters(broker: Any) -> set[str]:
    """The ids of the jobs whose dead letters wait in Redis. (Not ``qsize``: while a failed recording attempt is
    retried, its delayed copy exists before the group commit acks the attempt, and both are counted.)"""
    keys = (f"{contracts.DEAD_LETTER}.msgs", f"{contracts.DEAD_LETTER}.DQ.msgs")
    letters = [Message.decode(data) for key in keys for data in broker.client.hvals(f"{broker.namespace}:{key}")]
    return {letter.kwargs["message"]["message_id"] for letter in letters}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dead_letter_is_recorded_once_postgres_is_back(
    broker: Any,
    probe: Probe,
    test_actors: dict[str, Any],
    processes: Processes,
    own_postgres: PostgresInstance,
) -> None:
    # Given an ops worker recording dead letters into our own Postgres (recorder retrying every 250 ms)
    ops = processes.start(
        "ops",
        dramatiq_argv("tests.middleware.ops_fast_retry", "-p1", "-t2"),
        subprocess_env(ZAPQ_DATABASE_URL=own_postgres.url),
    )
    # And that Postgres down
    own_postgres.stop()

    # When a job fails for good on an in-process worker that consumes only `webhooks`
    worker = dramatiq.Worker(broker, queues={contracts.WEBHOOKS}, worker_timeout=50, worker_threads=2)
    worker.start()
    try:
        message = test_actors["test_permanent"].send()
        broker.join(contracts.WEBHOOKS, timeout=10_000)
        worker.join()
    finally:
        worker.stop()

    # Then the recorder fails and keeps retrying: the dead letter waits in the `dead-letter` queue
    wait_until(lambda: recorder_failures(broker) >= 3, timeout=30, what="three failed recorder attempts")
    assert ops.poll() is None, processes.logs()
    assert waiting_dead_letters(broker) == {message.message_id}

    failed_while_down = recorder_failures(broker)

    # When Postgres is back
    own_postgres.start()
    broker.join(contracts.DEAD_LETTER, timeout=30_000)

    # Then the ledger has exactly one row for the job
    db = Database.from_url(own_postgres.url, pool_size=1)
    try:
        rows = ledger_rows(db)
    finally:
        db.close()
    assert [(r.message_id, r.actor_name, r.reason, r.attempts) for r in rows] == [
        (message.message_id, "test_permanent", "permanent", 1)
    ], processes.logs()
    print(f"\nrecorder outage: >= {failed_while_down} failed recorder attempts while Postgres was down, then 1 row")
