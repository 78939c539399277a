"""Queue wait time per queue and inbound messages per type reach ``GET /metrics`` from the workers, through Redis."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq import Message
from starlette.testclient import TestClient

from libs import contracts
from libs.api.app import create_app
from libs.db.engine import Database
from libs.ingest import metrics as inbound
from libs.middleware.lifecycle import Lifecycle
from libs.middleware.queuewait import BUCKETS, QueueWaits, waited
from libs.settings import Settings
from tests.helpers import drain
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest, edge, ingest  # noqa: F401 - fixtures
from tests.sending.conftest import make_connection


def scrape(settings: Settings) -> str:
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {settings.api_token}"})
    assert response.status_code == 200, response.text
    return response.text


def flush_lifecycle(broker: Any) -> None:
    for middleware in broker.middleware:
        if isinstance(middleware, Lifecycle):
            middleware.flush()


def test_queue_wait_is_a_histogram_per_queue(
    settings: Settings, broker: Any, worker: dramatiq.Worker, test_actors: dict[str, Any], probe: Any
) -> None:
    # Given two jobs that entered the webhooks queue 3 s before a worker could start them
    entered_ms = int(time.time() * 1000) - 3_000
    for key in ("a", "b"):
        message = test_actors["test_scripted"].message(key)
        broker.enqueue(message.copy(message_timestamp=entered_ms))
    # When the worker runs them and the lifecycle flushes
    drain(broker, worker, [contracts.WEBHOOKS])
    flush_lifecycle(broker)
    # Then /metrics counts both in the webhooks queue's histogram, between 2.5 and 5 s
    text = scrape(settings)
    assert 'zapq_queue_wait_seconds_bucket{le="2.5",queue="webhooks"} 0.0' in text
    assert 'zapq_queue_wait_seconds_bucket{le="5.0",queue="webhooks"} 2.0' in text
    assert 'zapq_queue_wait_seconds_count{queue="webhooks"} 2.0' in text


def test_a_delayed_job_waits_from_its_eta_not_its_enqueue() -> None:
    now = time.time()
    retried: Message[Any] = Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={"eta": int((now - 1) * 1000)}
    ).copy(message_timestamp=int((now - 600) * 1000))
    assert 0.9 < waited(retried, now) < 1.1  # not 600 s: it was not due before its eta
    fresh: Message[Any] = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    assert waited(fresh.copy(message_timestamp=int(now * 1000) + 5_000), now) == 0.0  # clock skew: never negative


def test_queue_waits_count_each_start_once() -> None:
    class Pipe:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str, float]] = []

        def hincrby(self, key: str, field: str, n: int) -> None:
            self.calls.append((key, field, n))

        def hincrbyfloat(self, key: str, field: str, n: float) -> None:
            self.calls.append((key, field, n))

    from libs.keys import LifecycleKeys

    waits = QueueWaits()
    waits.observe("messages", 0.02)
    waits.observe("messages", 7200.0)  # beyond the last finite bound: +Inf
    pipe = Pipe()
    assert waits.write(pipe, LifecycleKeys("ns"))
    fields = {field: n for _, field, n in pipe.calls}
    assert fields == {"messages|0.05": 1, "messages|+Inf": 1, "messages|count": 2, "messages|sum": 7200.02}
    assert not waits.write(Pipe(), LifecycleKeys("ns"))  # taken by the first write
    assert BUCKETS[-1] == float("inf")


def test_inbound_messages_are_counted_per_company_connection_and_type(
    settings: Settings,
    db: Database,
    ingest: Ingest,  # noqa: F811 - fixture
) -> None:
    # Given a company's Meta number
    company, connection = make_connection(db, phone_number_id=f.NUMBER_ID)
    # When two texts and an image arrive, then one of the texts again with a new one (the repeat stores nothing)
    messages = [
        f.meta_message("wamid.M1", "text", {"body": "hi"}),
        f.meta_message("wamid.M2", "text", {"body": "again"}),
        f.meta_message("wamid.M3", "image", {"id": "media-1", "mime_type": "image/jpeg"}),
    ]
    ingest.meta(f.meta_payload(f.meta_change(messages=messages)))
    again = [messages[0], f.meta_message("wamid.M4", "text", {"body": "third"})]
    ingest.meta(f.meta_payload(f.meta_change(messages=again)))
    # Then /metrics counts them by type for the company and connection
    text = scrape(settings)
    labels = f'company="{company}",connection="{connection}"'
    assert f'zapq_inbound_messages_total{{{labels},type="text"}} 3.0' in text
    assert f'zapq_inbound_messages_total{{{labels},type="image"}} 1.0' in text


def test_inbound_type_labels_are_bounded() -> None:
    assert inbound.type_label("text") == "text"
    assert inbound.type_label("imageMessage") == "imageMessage"
    assert inbound.type_label("a-type-whatsapp-adds-next-year") == "other"
    assert inbound.field(1, 2, "x" * 40) == "1|2|other"


def test_a_redis_error_loses_the_counts_not_the_work() -> None:
    class Broken:
        def pipeline(self, **_: Any) -> Any:
            raise ConnectionError("redis down")

    from collections import Counter

    inbound.record(Broken(), "ns", [Counter({"1|2|text": 1})])  # no exception
    inbound.record(Broken(), "ns", [Counter()])  # nothing to write: no call at all
