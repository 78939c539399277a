"""Queue stats, job lookup, dead letters and metrics over HTTP, against a known state of Redis and Postgres."""

from __future__ import annotations

import statistics
import time
from typing import Any

from starlette.testclient import TestClient

from libs import contracts
from libs.db.engine import Database
from libs.deadletters import actions
from libs.deadletters.store import Filter
from libs.enqueue import enqueue_many
from libs.settings import Settings
from tests.helpers import queue_length
from tests.middleware.support import declare_test_actors, record_entry


def queues_by_name(api: TestClient) -> dict[str, dict[str, Any]]:
    response = api.get("/api/queues")
    assert response.status_code == 200
    return {q["queue"]: q for q in response.json()}


def sends(n: int, queue_contract: Any = contracts.SEND_NORMAL) -> list[Any]:
    return [queue_contract.message(contracts.SendMessage(i)) for i in range(n)]


def test_queue_stats_match_a_known_state(api: TestClient, broker: Any, settings: Settings, db: Database) -> None:
    # Given 100 waiting sends, 3 delayed ones, and 2 dead letters of webhooks (one already replayed)
    enqueue_many(broker.client, settings.redis_namespace, sends(100), lifecycle=True)
    for message in sends(3, contracts.SEND_LOW):
        broker.enqueue(message, delay=60_000)
    actions.record(db, record_entry(queue=contracts.WEBHOOKS))
    actions.record(db, record_entry(queue=contracts.WEBHOOKS))
    replayed = actions.record(db, record_entry(queue=contracts.CAMPAIGNS))
    assert replayed
    row = actions.list_rows(db, Filter(queue=contracts.CAMPAIGNS))[0]
    actions.replay(db, lambda m: m, [row.id])
    # When the stats are read
    stats = queues_by_name(api)
    # Then every number matches
    assert set(stats) >= {contracts.MESSAGES, contracts.MESSAGES_LOW, contracts.WEBHOOKS, contracts.DEAD_LETTER}
    assert stats[contracts.MESSAGES]["waiting"] == 100
    assert stats[contracts.MESSAGES]["delayed"] == 0
    assert stats[contracts.MESSAGES_LOW]["delayed"] == 3
    assert stats[contracts.MESSAGES_LOW]["waiting"] == 0
    assert stats[contracts.WEBHOOKS]["dead"] == 2
    assert stats[contracts.CAMPAIGNS]["dead"] == 0
    assert stats[contracts.MESSAGES]["in_flight"] == 0
    assert len(stats[contracts.MESSAGES]["completed_per_minute"]) == 60
    assert 0 <= stats[contracts.MESSAGES]["oldest_waiting_seconds"] < 60
    assert stats[contracts.WEBHOOKS]["oldest_waiting_seconds"] is None
    # And a waiting job knows its place
    last = sends(1)
    enqueue_many(broker.client, settings.redis_namespace, last, lifecycle=True)
    job = api.get(f"/api/jobs/{last[0].message_id}").json()
    assert job["state"] == "waiting" and job["position"] == 101 and job["eta_seconds"] is None


def test_dead_letters_are_listed_filtered_and_replayed_once(
    api: TestClient, broker: Any, settings: Settings, db: Database
) -> None:
    declare_test_actors(broker)
    old = record_entry(queue=contracts.WEBHOOKS, failed_at=time.time() - 3 * 3600)
    actions.record(db, old)
    actions.record(db, record_entry(queue=contracts.MESSAGES, actor="test_flaky", kwargs={"key": "k"}))
    rows = api.get("/api/dead-letters").json()
    assert [r["queue"] for r in rows] == [contracts.MESSAGES, contracts.WEBHOOKS]
    assert all(r["state"] == "dead" for r in rows) and "traceback" not in rows[0]
    assert [r["queue"] for r in api.get("/api/dead-letters?queue=webhooks").json()] == [contracts.WEBHOOKS]
    assert len(api.get("/api/dead-letters?limit=1").json()) == 1
    assert len(api.get("/api/dead-letters?since=1h").json()) == 2  # created_at is the recording time
    for bad in ("limit=0", "limit=x", "since=yesterday", "state=gone"):
        assert api.get(f"/api/dead-letters?{bad}").status_code == 400
    # When the messages one is replayed
    target = rows[0]
    replay = api.post(f"/api/dead-letters/{target['id']}/replay")
    assert replay.status_code == 200, replay.text
    assert replay.json()["job_id"] == target["message_id"]
    # Then its job waits again on its queue, the row is replayed, and a second replay is refused
    assert queue_length(broker.client, settings.redis_namespace, contracts.MESSAGES) == 1
    assert api.get("/api/dead-letters?queue=messages").json()[0]["state"] == "replayed"
    assert api.get("/api/dead-letters?state=dead").json()[0]["queue"] == contracts.WEBHOOKS
    again = api.post(f"/api/dead-letters/{target['id']}/replay")
    assert again.status_code == 409 and "already replayed" in again.json()["error"]
    assert api.post("/api/dead-letters/999/replay").status_code == 404
    assert queue_length(broker.client, settings.redis_namespace, contracts.MESSAGES) == 1


def test_a_dead_job_is_found_through_the_ledger(api: TestClient, db: Database) -> None:
    entry = record_entry(queue=contracts.WEBHOOKS, error_message="kaput")
    actions.record(db, entry)
    job = api.get(f"/api/jobs/{entry.message['message_id']}").json()
    assert job["state"] == "dead"
    assert job["failures"] == 3 and job["last_error"] == "kaput"
    assert job["dead_letter"]["reason"] == "exhausted"


def test_metrics_expose_queue_depth_dead_letters_and_workers(
    api: TestClient, broker: Any, settings: Settings, db: Database
) -> None:
    # Given 7 urgent sends waiting, a dead letter, and two workers: one beating now, one silent for an hour
    enqueue_many(broker.client, settings.redis_namespace, sends(7, contracts.SEND_URGENT), lifecycle=True)
    actions.record(db, record_entry(queue=contracts.WEBHOOKS))
    now_ms = int(time.time() * 1000)
    broker.client.zadd(f"{settings.redis_namespace}:__heartbeats__", {"alive": now_ms, "gone": now_ms - 3_600_000})
    # When Prometheus scrapes
    text = api.get("/metrics").text
    # Then depth, dead letters, counters and live workers are there
    assert 'zapq_queue_waiting{queue="messages.urgent"}' in text
    assert 'zapq_queue_delayed{queue="messages"} 0.0' in text
    assert 'zapq_queue_inflight{queue="messages"} 0.0' in text
    assert 'zapq_queue_dead{queue="webhooks"} 1.0' in text
    assert (
        'zapq_dead_letters_total{actor="test_scripted",error_type="libs.errors.TransientError",queue="webhooks"} 1.0'
        in text
    )
    assert 'zapq_jobs_completed_total{queue="messages"}' in text
    assert "zapq_jobs_failed_total" in text
    assert 'zapq_queue_oldest_waiting_seconds{queue="messages.urgent"}' in text
    assert 'zapq_queue_waiting{queue="messages.urgent"} 7.0' in text
    assert "zapq_workers_alive 1.0" in text


def timed_queues(api: TestClient, rounds: int = 10) -> tuple[float, float, Any]:
    """Median and max of ``GET /api/queues`` in ms (after one warm-up), and the last answer."""
    api.get("/api/queues")
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = api.get("/api/queues")
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), max(timings), response.json()


def test_stats_cost_stays_flat_with_100k_waiting_jobs(api: TestClient, broker: Any, settings: Settings) -> None:
    # Given the cost of reading the stats of an empty system
    empty_ms, _, _ = timed_queues(api)
    # And then 100,000 jobs waiting on one queue (bulk-enqueued, with their lifecycle records)
    started = time.perf_counter()
    for _ in range(5):
        enqueue_many(broker.client, settings.redis_namespace, sends(20_000, contracts.SEND_LOW), lifecycle=True)
    enqueued_s = time.perf_counter() - started
    assert queue_length(broker.client, settings.redis_namespace, contracts.MESSAGES_LOW) == 100_000
    # When GET /api/queues is timed again
    median, worst, body = timed_queues(api)
    print(
        f"\n100k waiting: bulk enqueue {enqueued_s:.1f} s; GET /api/queues median {median:.1f} ms "
        f"(max {worst:.1f} ms; empty system {empty_ms:.1f} ms)"
    )
    # Then the numbers are right and the read costs about what it costs on an empty system (under 50 ms;
    # on a machine so loaded that even the empty read is slow, at most 3 times the empty read)
    assert {q["queue"]: q for q in body}[contracts.MESSAGES_LOW]["waiting"] == 100_000
    assert median < 50 or median < 3 * empty_ms


def test_a_method_not_allowed_names_the_allowed_ones(api: Any) -> None:
    response = api.put("/api/companies")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert api.delete("/api/webhook-endpoints").headers["allow"] == "GET, HEAD, POST"
