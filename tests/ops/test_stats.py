"""Queue stats and job lookup (libs.ops.stats) and the zapq stats / job / top commands, on a real worker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from libs import contracts
from libs.cli.main import main
from libs.db.engine import Database
from libs.deadletters import actions
from libs.enqueue import enqueue_many
from libs.middleware.lifecycle import Lifecycle
from libs.ops.stats import job_lookup, queue_stats
from libs.settings import Settings
from tests.helpers import drain
from tests.lifecycle_support import installed_lifecycle
from tests.middleware.support import record_entry, wait_until

#: Jobs of ``test_stats_gated`` wait here until the test opens the gate.
GATE = threading.Event()
RUNNING = threading.Semaphore(0)


def quick(n: int) -> None:
    """Does nothing, successfully."""


def gated(n: int) -> None:
    """Signals that it runs, then waits for the gate."""
    RUNNING.release()
    assert GATE.wait(30), "the test never opened the gate"


@pytest.fixture(scope="session")
def stats_actors(services: Any) -> dict[str, dramatiq.Actor[Any, Any]]:
    actors = {}
    for name, fn in (("test_stats_quick", quick), ("test_stats_gated", gated)):
        actors[name] = services.actors.get(name) or dramatiq.actor(
            fn, actor_name=name, queue_name=contracts.MESSAGES, broker=services
        )
    return actors


@pytest.fixture
def lifecycle(broker: Any) -> Iterator[Lifecycle]:
    with installed_lifecycle(broker) as lc:
        yield lc


def by_queue(broker: Any, settings: Settings, db: Database | None = None) -> dict[str, Any]:
    return {s.queue: s for s in queue_stats(broker.client, settings.redis_namespace, db)}


@pytest.fixture
def stopped_worker(broker: Any) -> Iterator[dramatiq.Worker]:
    """A worker the test starts itself (after enqueuing)."""
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=2)
    yield worker
    worker.stop()
    # As tests/conftest.py's worker: a stopped worker's middleware left on the broker would give it consumers
    # for queues declared later, fetching jobs nobody runs (a later test's jobs wait for crash recovery).
    broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]


def test_a_job_goes_from_its_place_in_the_queue_to_succeeded(
    broker: Any,
    settings: Settings,
    lifecycle: Lifecycle,
    stats_actors: dict[str, Any],
    stopped_worker: dramatiq.Worker,
) -> None:
    # Given 10 jobs waiting and no worker
    sent = [stats_actors["test_stats_quick"].send(i) for i in range(10)]
    lifecycle.flush()
    # Then the 5th is 5th in line, with no ETA (nothing completed recently), and the queue shows 10 waiting
    job = job_lookup(broker.client, settings.redis_namespace, sent[4].message_id)
    assert (job.state, job.queue, job.position, job.eta_seconds) == ("waiting", contracts.MESSAGES, 5, None)
    assert by_queue(broker, settings)[contracts.MESSAGES].waiting == 10
    # When a worker runs them
    stopped_worker.start()
    drain(broker, stopped_worker, [contracts.MESSAGES])
    lifecycle.flush()
    # Then the job succeeded, with its worker, start and duration
    job = job_lookup(broker.client, settings.redis_namespace, sent[4].message_id)
    assert job.state == "succeeded" and job.position is None
    assert job.duration_ms is not None and 0 <= job.duration_ms < 5_000
    assert job.worker and job.started_at and job.finished_at and job.started_at <= job.finished_at
    # And the queue's numbers show 10 completions: per minute, rate, mean, p95, totals
    stats = by_queue(broker, settings)[contracts.MESSAGES]
    assert stats.waiting == 0 and stats.in_flight == 0
    assert sum(stats.completed_per_minute) == 10 and sum(stats.failed_per_minute) == 0
    assert stats.completed_total == 10
    assert stats.rate_per_second > 0 and stats.mean_ms is not None and stats.p95_ms is not None
    # And a job enqueued now gets an ETA from that rate
    stopped_worker.pause()
    more = [stats_actors["test_stats_quick"].send(i) for i in range(4)]
    lifecycle.flush()
    job = job_lookup(broker.client, settings.redis_namespace, more[3].message_id)
    assert job.state == "waiting" and job.position == 4
    assert job.eta_seconds is not None and job.eta_seconds == pytest.approx(4 / stats.rate_per_second, rel=0.5)
    stopped_worker.resume()


def test_in_flight_counts_the_jobs_workers_hold(
    broker: Any, settings: Settings, lifecycle: Lifecycle, stats_actors: dict[str, Any], worker: dramatiq.Worker
) -> None:
    GATE.clear()
    try:
        # Given two jobs fetched by a worker, the first of them running (held at a gate)
        sent = [stats_actors["test_stats_gated"].send(i) for i in range(2)]
        assert RUNNING.acquire(timeout=10)
        lifecycle.flush()
        # Then, once the consumer has fetched the second one too (it may have polled between the two sends),
        # the queue shows both in flight (fetched, not acked: the workers' ack sets), none waiting
        wait_until(lambda: by_queue(broker, settings)[contracts.MESSAGES].in_flight == 2, timeout=10, what="fetch")
        stats = by_queue(broker, settings)[contracts.MESSAGES]
        assert (stats.waiting, stats.in_flight) == (0, 2)

        # And the running one says where it runs (once the lifecycle's buffer holding its start is written)
        def running() -> list[Any]:
            lifecycle.flush()
            jobs = [job_lookup(broker.client, settings.redis_namespace, m.message_id) for m in sent]
            return [job for job in jobs if job.state == "running"]

        wait_until(lambda: bool(running()), timeout=10, what="a job shown running")
        [job, *_] = running()
        assert job.worker and job.started_at
    finally:
        GATE.set()
    assert RUNNING.acquire(timeout=10)
    drain(broker, worker, [contracts.MESSAGES])
    wait_until(lambda: by_queue(broker, settings)[contracts.MESSAGES].in_flight == 0, timeout=10, what="the acks")


def test_delayed_and_dead_counts(broker: Any, settings: Settings, db: Database, lifecycle: Lifecycle) -> None:
    # Given 2 delayed sends, one dead letter of webhooks and one job in Dramatiq's own dead-letter zset
    for i in range(2):
        broker.enqueue(contracts.SEND_LOW.message(contracts.SendMessage(i)), delay=60_000)
    entry = record_entry(queue=contracts.WEBHOOKS)
    actions.record(db, entry)
    broker.client.zadd(f"{settings.redis_namespace}:{contracts.CAMPAIGNS}.XQ", {"x": 1})
    lifecycle.flush()
    stats = by_queue(broker, settings, db)
    assert stats[contracts.MESSAGES_LOW].delayed == 2
    assert stats[contracts.WEBHOOKS].dead == 1
    assert stats[contracts.CAMPAIGNS].broker_dead == 1
    # And the dead job is found through the ledger
    job = job_lookup(broker.client, settings.redis_namespace, entry.message["message_id"], db)
    assert job.state == "dead" and job.dead_letter is not None and job.dead_letter["reason"] == "exhausted"


def test_the_stats_job_and_top_commands(
    broker: Any, settings: Settings, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = [contracts.SEND_URGENT.message(contracts.SendMessage(i)) for i in range(3)]
    enqueue_many(broker.client, settings.redis_namespace, messages, lifecycle=True)

    assert main(["stats", "--json"]) == 0
    rows = {row["queue"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows[contracts.MESSAGES_URGENT]["waiting"] == 3

    assert main(["stats"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["QUEUE", "WAITING", "DELAYED"]
    assert any(line.split()[:2] == [contracts.MESSAGES_URGENT, "3"] for line in table.splitlines())

    assert main(["job", messages[1].message_id, "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["state"] == "waiting" and job["position"] == 2

    assert main(["job", messages[1].message_id]) == 0
    assert "position: 2" in capsys.readouterr().out

    assert main(["job", "no-such-job"]) == 3
    assert "no job no-such-job" in capsys.readouterr().err

    assert main(["top", "--once"]) == 0
    screen = capsys.readouterr().out
    assert screen.startswith("zapq top") and contracts.MESSAGES_URGENT in screen


def test_one_definition_of_the_per_minute_figures() -> None:
    from libs.ops.stats import FIGURE_LABELS, QueueStats, last_full

    # The current minute is still counting: "per minute" is the last full one, everywhere
    assert last_full([4, 7, 2]) == 7 and last_full([3]) == 0 and last_full([]) == 0
    fields = set(QueueStats.__dataclass_fields__)
    assert set(FIGURE_LABELS) <= fields
    assert "300 s" in FIGURE_LABELS["rate_per_second"] and QueueStats("q", 0, 0, 0, 0, 0, 0).rate_window_s == 300


def test_cli_api_and_dashboard_show_the_same_per_minute_figure() -> None:
    from libs.api.pages import DASHBOARD_HTML
    from libs.cli.stats import _row, render_stats
    from libs.ops.stats import QueueStats

    stats = QueueStats("messages", 0, 0, 0, 0, 0, 0, completed_per_minute=[5, 9, 1], done_last_minute=9)
    row = _row(stats)
    assert row["done/last min"] == 9 == stats.to_dict()["done_last_minute"]
    assert "rate/s: over the last 300 s" in render_stats([row])
    assert "q.done_last_minute" in DASHBOARD_HTML and "q.failed_last_minute" in DASHBOARD_HTML
