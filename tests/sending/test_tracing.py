"""One trace per message, exported in-process: the parent/child chain of an outbound and an inbound message.

The API, the webhook edge, the sender, the ingest worker and the event dispatcher run in this process with
tracing on (an in-memory exporter); the provider is the fake Graph API and the events go to a fake CRM over real
HTTP. Attributes never carry the phone number, the text or the token.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from starlette.testclient import TestClient

from libs import contracts, tracing
from libs.api.app import create_app as create_api
from libs.db.engine import Database
from libs.db.models import Message, MessageStatus
from libs.enqueue import prepared
from libs.ingest.edge import create_app as create_edge
from libs.ingest.sweep import sweep_webhooks
from libs.settings import Settings
from tests.events.conftest import crm, make_endpoint  # noqa: F401 - fixture
from tests.fakes.crm import CrmReceiver
from tests.fakes.evolution import DEFAULT_INSTANCE
from tests.helpers import drain
from tests.ingest import factories as f
from tests.ingest.conftest import Edge, Ingest
from tests.sending.conftest import (
    DEFAULT_TOKEN,
    configure,
    enqueue,
    make_baileys_connection,
    make_connection,
    make_messages,
)

PHONE = "5511987654321"
TEXT = "your order 4711 ships today"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, exported synchronously to memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter, batch=False)
    yield exporter
    tracing.shutdown()


def by_name(finished: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


def one(finished: list[ReadableSpan], name: str) -> ReadableSpan:
    found = by_name(finished, name)
    assert len(found) == 1, f"{name}: {[s.name for s in finished]}"
    return found[0]


def child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None, f"{child.name} has no parent"
    return child.parent.span_id == parent.context.span_id and child.context.trace_id == parent.context.trace_id


def wait_for(
    finished: Callable[[], list[ReadableSpan]], found: Callable[[list[ReadableSpan]], bool]
) -> list[ReadableSpan]:
    """The finished spans once ``found`` holds for them (polled until a deadline)."""
    deadline = time.monotonic() + 15
    while True:
        spans = finished()
        if found(spans):
            return spans
        assert time.monotonic() < deadline, f"not found in {[s.name for s in spans]}"
        time.sleep(0.05)


def delivery_of(finished: list[ReadableSpan], event_type: str, status: str | None = None) -> list[ReadableSpan]:
    """The ``event.deliver`` spans of the deliveries of ``event_type`` whose parent is a span with ``status``."""
    by_id = {span.context.span_id: span for span in finished}
    out = []
    for span in by_id.values():
        if span.name != "event.deliver" or (span.attributes or {}).get("zapq.event.type") != event_type:
            continue
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        if status is None or (parent is not None and (parent.attributes or {}).get("zapq.status") == status):
            out.append(span)
    return out


def dump(name: str, finished: list[ReadableSpan]) -> None:
    """With ``ZAPQ_TRACE_DUMP=<dir>``, write the spans as JSON for ``docs/trace_waterfall.py`` (the docs' pictures)."""
    target = os.environ.get("ZAPQ_TRACE_DUMP")
    if not target:
        return
    rows = [
        {
            "name": s.name,
            "trace_id": f"{s.context.trace_id:032x}",
            "span_id": f"{s.context.span_id:016x}",
            "parent_id": f"{s.parent.span_id:016x}" if s.parent is not None else None,
            "start": s.start_time,
            "end": s.end_time,
            "error": not s.status.is_ok,
            "attributes": dict(s.attributes or {}),
            "events": [{"name": e.name, "time": e.timestamp} for e in s.events],
        }
        for s in finished
    ]
    Path(target).mkdir(parents=True, exist_ok=True)
    (Path(target) / f"{name}.json").write_text(json.dumps(rows, indent=1))


def no_secrets(finished: list[ReadableSpan], *secrets: str) -> None:
    for span in finished:
        for key, value in (span.attributes or {}).items():
            assert not any(secret in str(value) for secret in secrets), (span.name, key, value)


def test_an_outbound_message_is_one_trace_from_the_api_to_its_status_webhook_and_event_deliveries(
    settings: Settings,
    db: Database,
    broker: Any,
    sender: Any,
    worker: dramatiq.Worker,
    spans: InMemorySpanExporter,
    crm: tuple[CrmReceiver, str],  # noqa: F811 - fixture
) -> None:
    company, _ = make_connection(db, phone_number_id=f.NUMBER_ID)
    # Given a company whose events go to a CRM, and a message created through the API
    with TestClient(create_api(settings)) as api:
        api.headers["authorization"] = f"Bearer {settings.api_token}"
        make_endpoint(api, company, crm[1] + "/hooks", event_types=["message.status"])
        response = api.post("/api/messages", json={"company_id": company, "to": PHONE, "text": TEXT})
    assert response.status_code == 201, response.text
    message_id = response.json()["id"]
    # When it is sent and its status webhook comes back
    drain(broker, worker)
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None and row.external_id, row
        wamid = row.external_id
    with TestClient(create_edge(settings)) as client:
        Ingest(Edge(client, settings), db, broker, worker).meta(f.meta_statuses(f.meta_status(wamid, "delivered")))
    finished = wait_for(
        spans.get_finished_spans,
        lambda done: len(delivery_of(done, "message.status")) == 2,  # "sent" (by the sender), "delivered"
    )

    # Then one trace runs POST → enqueue → send (throttle acquired, provider call) → the status
    post = one(finished, "POST /api/messages")
    assert post.parent is None
    enqueue = one(finished, "message.enqueue")
    send = one(finished, "message.send")
    assert child_of(enqueue, post) and child_of(send, enqueue)
    assert not by_name(finished, "job send_message")  # an async job's span is its own (message.send), not two
    # One span per send: the throttle's answer and the provider call's outcome are its attributes
    assert not by_name(finished, "provider.send") and not send.events
    assert send.attributes is not None and send.attributes["http.response.status_code"] == 200
    assert send.attributes["zapq.provider"] == "meta" and send.attributes["zapq.connection"] == tracing.hashed(
        row.connection_id
    )
    took = [float(send.attributes[key]) for key in ("zapq.throttle.ms", "zapq.provider.ms")]
    assert all(ms >= 0 for ms in took) and sum(took) <= (send.end_time - send.start_time) / 1e6
    status = one(finished, "message.status")
    assert child_of(status, send), "the status webhook joins the message's trace through its wamid"
    # And the status span links the webhook that carried it, in the webhook's own trace
    apply = one(finished, "webhook.apply")
    assert [link.context.span_id for link in status.links] == [apply.context.span_id]
    assert apply.context.trace_id != post.context.trace_id
    assert send.attributes is not None and send.attributes["zapq.message"] == tracing.hashed(message_id)
    # And each message.status event's delivery to the CRM is a span of that trace: "delivered" under the
    # status span that wrote it, "sent" (written by the sender's record) under the send
    [delivered] = delivery_of(finished, "message.status", status="delivered")
    assert child_of(delivered, status)
    assert delivered.attributes is not None and delivered.attributes["http.response.status_code"] == 200
    [sent] = [d for d in delivery_of(finished, "message.status") if d is not delivered]
    assert child_of(sent, send)
    assert {d.type for d in crm[0].received} == {"message.status"}
    no_secrets(finished, PHONE, TEXT, DEFAULT_TOKEN, wamid, crm[1])
    dump("outbound", finished)


def test_a_failed_send_records_the_meta_error_code(
    settings: Settings, db: Database, broker: Any, sender: Any, worker: dramatiq.Worker, spans: InMemorySpanExporter
) -> None:
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, [PHONE])
    configure(sender.settings.meta_graph_url, forced_errors=[131026])
    contracts.SEND_NORMAL.send(contracts.SendMessage(message_id), broker=broker)
    drain(broker, worker)
    send = one(list(spans.get_finished_spans()), "message.send")
    assert send.attributes is not None and send.attributes["zapq.provider.error_code"] == 131026
    assert send.attributes["http.response.status_code"] == 400
    assert not send.status.is_ok and send.status.description == "InvalidRecipientError"


def test_an_inbound_message_is_one_trace_from_the_webhook_post_to_its_event_delivery(
    settings: Settings,
    db: Database,
    broker: Any,
    worker: dramatiq.Worker,
    spans: InMemorySpanExporter,
    crm: tuple[CrmReceiver, str],  # noqa: F811 - fixture
) -> None:
    company, _ = make_connection(db, phone_number_id=f.NUMBER_ID)
    with TestClient(create_api(settings)) as api:
        api.headers["authorization"] = f"Bearer {settings.api_token}"
        make_endpoint(api, company, crm[1] + "/hooks", event_types=["message.received"])
    wamid = "wamid.TRACEINBOUND1"
    payload = f.meta_payload(f.meta_change(messages=[f.meta_message(wamid, "text", {"body": TEXT}, sender=PHONE)]))
    with TestClient(create_edge(settings)) as client:
        hook = Ingest(Edge(client, settings), db, broker, worker).meta(payload)
    assert hook.status.value == "processed"
    finished = wait_for(spans.get_finished_spans, lambda done: bool(by_name(done, "event.deliver")))

    # Then one trace runs POST (the store: it ends as the INSERT commits) → apply (the context kept in the
    # webhook's row; the message received: its attributes) → the event's delivery to the CRM
    post = one(finished, "POST /webhooks/meta")
    assert post.parent is None and post.status.is_ok and "zapq.duplicate" not in (post.attributes or {})
    apply = one(finished, "webhook.apply")
    assert child_of(apply, post) and not by_name(finished, "job process_webhook")  # the job carries no context
    assert apply.attributes is not None and not apply.events
    assert apply.attributes["zapq.type"] == "text" and apply.attributes["zapq.wamid"] == tracing.hashed(wamid)
    deliver = one(finished, "event.deliver")
    assert child_of(deliver, apply)
    assert deliver.attributes is not None and deliver.attributes["zapq.event.type"] == "message.received"
    assert [d.type for d in crm[0].received] == ["message.received"]
    no_secrets(finished, PHONE, TEXT, wamid, crm[1])
    dump("inbound", finished)
    # And Meta's redelivery of the same webhook is a POST span marked duplicate
    with TestClient(create_edge(settings)) as client:
        assert Edge(client, settings).meta(payload).json()["status"] == "duplicate"
    again = [s for s in by_name(spans.get_finished_spans(), "POST /webhooks/meta") if s is not post]
    assert len(again) == 1 and (again[0].attributes or {}).get("zapq.duplicate") is True


def test_a_webhook_whose_job_redis_lost_is_applied_in_its_trace_all_the_same(
    settings: Settings, db: Database, broker: Any, worker: dramatiq.Worker, spans: InMemorySpanExporter
) -> None:
    # Given a webhook stored and enqueued, then its job lost with Redis's data before a worker took it
    make_connection(db, phone_number_id=f.NUMBER_ID)
    payload = f.meta_payload(
        f.meta_change(messages=[f.meta_message("wamid.TRACESWEPT1", "text", {"body": TEXT}, sender=PHONE)])
    )
    worker.pause()
    with TestClient(create_edge(settings)) as client:  # leaving it waits for the background enqueue
        assert Edge(client, settings).meta(payload).status_code == 200
    broker.flush_all()
    worker.resume()
    # When the outbox sweep finds it (an hour later) and a worker applies it
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert sweep_webhooks(db, broker.client, settings.redis_namespace, older_than_seconds=60, now=later) == 1
    drain(broker, worker)
    # Then its apply is in the trace of the request that stored it: the context was kept in its row
    finished = list(spans.get_finished_spans())
    apply = one(finished, "webhook.apply")
    assert child_of(apply, one(finished, "POST /webhooks/meta"))
    assert apply.attributes is not None and apply.attributes["zapq.wamid"] == tracing.hashed("wamid.TRACESWEPT1")


def test_a_bridge_message_is_traced_to_its_event_delivery_too(
    settings: Settings,
    db: Database,
    broker: Any,
    worker: dramatiq.Worker,
    spans: InMemorySpanExporter,
    crm: tuple[CrmReceiver, str],  # noqa: F811 - fixture
) -> None:
    # Given a company with a Baileys-bridge connection and a CRM endpoint
    company = f.company(db)
    f.baileys_connection(db, company)
    with TestClient(create_api(settings)) as api:
        api.headers["authorization"] = f"Bearer {settings.api_token}"
        make_endpoint(api, company, crm[1] + "/hooks", event_types=["message.received"])
    # When the bridge posts a customer's message
    data = {
        "key": {"remoteJid": f"{PHONE}@s.whatsapp.net", "fromMe": False, "id": "3EBTRACE1"},
        "pushName": "Maria",
        "message": {"conversation": TEXT},
        "messageType": "conversation",
        "messageTimestamp": 1717000000,
    }
    with TestClient(create_edge(settings)) as client:
        Ingest(Edge(client, settings), db, broker, worker).baileys(f.evolution("messages.upsert", data))
    finished = wait_for(spans.get_finished_spans, lambda done: bool(by_name(done, "event.deliver")))
    # Then its delivery is a span under the span that applied the webhook (the message received its attributes),
    # in the webhook's trace
    apply = one(finished, "webhook.apply")
    assert apply.attributes is not None and apply.attributes["zapq.wamid"] == tracing.hashed("3EBTRACE1")
    assert child_of(one(finished, "event.deliver"), apply)
    assert apply.context.trace_id == one(finished, "POST /webhooks/baileys").context.trace_id
    no_secrets(finished, PHONE, TEXT, "3EBTRACE1")


def test_a_bridge_status_joins_the_trace_of_its_send(
    settings: Settings,
    db: Database,
    broker: Any,
    sender: Any,
    fake_evolution: str,
    worker: dramatiq.Worker,
    spans: InMemorySpanExporter,
) -> None:
    # Given a message sent through the Baileys bridge
    company, connection = make_baileys_connection(db, fake_evolution)
    [message_id] = make_messages(db, company, connection, [PHONE], body=TEXT)
    enqueue(broker, [message_id])
    drain(broker, worker)
    with db.session() as session:
        row = session.get(Message, message_id)
        assert row is not None and row.external_id, row
        key_id = row.external_id
    # When the bridge reports it delivered
    data = {"keyId": key_id, "remoteJid": f"{PHONE}@s.whatsapp.net", "fromMe": True, "status": "DELIVERY_ACK"}
    with TestClient(create_edge(settings)) as client:
        hook = Ingest(Edge(client, settings), db, broker, worker).baileys(
            f.evolution("messages.update", data, instance=DEFAULT_INSTANCE)
        )
    assert hook.status.value == "processed"
    # Then the status span is a child of the send, found by the bridge's key id, linking the webhook's apply
    finished = wait_for(spans.get_finished_spans, lambda done: bool(by_name(done, "message.status")))
    status, send = one(finished, "message.status"), one(finished, "message.send")
    assert child_of(status, send)
    assert (status.attributes or {})["zapq.status"] == "delivered"
    assert [link.context.span_id for link in status.links] == [one(finished, "webhook.apply").context.span_id]
    no_secrets(finished, PHONE, TEXT, key_id)


def test_a_failed_event_delivery_and_its_retry_are_spans_of_the_message_trace(
    settings: Settings,
    db: Database,
    broker: Any,
    worker: dramatiq.Worker,
    spans: InMemorySpanExporter,
    crm: tuple[CrmReceiver, str],  # noqa: F811 - fixture
) -> None:
    # Given a CRM that answers the first delivery 500
    company, _ = make_connection(db, phone_number_id=f.NUMBER_ID)
    crm[0].config.script = [500]
    with TestClient(create_api(settings)) as api:
        api.headers["authorization"] = f"Bearer {settings.api_token}"
        make_endpoint(api, company, crm[1] + "/hooks", event_types=["message.received"])
    # When a customer writes
    payload = f.meta_payload(f.meta_change(messages=[f.meta_message("wamid.TRACEFAIL1", "text", {"body": TEXT})]))
    with TestClient(create_edge(settings)) as client:
        Ingest(Edge(client, settings), db, broker, worker).meta(payload)
    finished = wait_for(spans.get_finished_spans, lambda done: len(by_name(done, "event.deliver")) == 2)
    # Then both attempts are spans of the message's trace: the first failed with the CRM's status, the retry not
    apply = one(finished, "webhook.apply")
    first, retry = sorted(by_name(finished, "event.deliver"), key=lambda s: (s.attributes or {})["zapq.attempt"])
    assert child_of(first, apply) and child_of(retry, apply)
    assert first.attributes is not None and first.attributes["http.response.status_code"] == 500
    assert not first.status.is_ok
    assert retry.attributes is not None and retry.attributes["http.response.status_code"] == 200
    assert retry.attributes["zapq.attempt"] == 2 and retry.status.is_ok


def test_tracing_off_creates_no_span_and_stamps_no_option(
    settings: Settings,
) -> None:
    assert not tracing.enabled()
    assert tracing.span("anything") is tracing.span("other")  # the one shared no-op context manager
    assert tracing.recorded_traceparent() is None  # no event row keeps a context
    [row] = prepared([contracts.SEND_NORMAL.message(contracts.SendMessage(1))])
    assert tracing.TRACEPARENT not in row.message.options and b"traceparent" not in row.data


def test_a_trace_sampled_out_makes_no_span_even_below_it(spans: InMemorySpanExporter) -> None:
    # Given a job whose message was sampled out (its traceparent's flags 00)
    unsampled = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"
    # When the job opens its span and spans inside it
    with tracing.span("message.send", parent=unsampled, ids={"zapq.message": 1}):
        assert tracing.current_traceparent() == unsampled  # the context still travels on (e.g. to a new job)
        with tracing.span("provider.send"):
            tracing.event("throttle.acquired", ids={"zapq.connection": 2})
            tracing.note("message.received", ids={"zapq.wamid": "w"})
        with tracing.span("any.child", ids={"zapq.wamid": "w"}):
            pass
    # Then nothing is recorded and no root trace is started below it
    assert list(spans.get_finished_spans()) == []
    assert tracing.current_traceparent() is None


def test_a_note_is_its_spans_attributes_once_then_an_event_each_time(spans: InMemorySpanExporter) -> None:
    # Given a span applying a webhook that carries three messages
    with tracing.span("webhook.apply", attributes={"zapq.source": "meta"}):
        # When each is noted (the second with its type left out)
        for wamid, kind in (("wamid.A", "text"), ("wamid.B", None), ("wamid.C", "image")):
            tracing.note("message.received", ids={"zapq.wamid": wamid}, **{"zapq.type": kind})
    # Then the first is the span's attributes (beside its own), the others events of the same name
    [apply] = spans.get_finished_spans()
    assert apply.attributes == {"zapq.source": "meta", "zapq.wamid": tracing.hashed("wamid.A"), "zapq.type": "text"}
    assert [(e.name, dict(e.attributes or {})) for e in apply.events] == [
        ("message.received", {"zapq.wamid": tracing.hashed("wamid.B")}),
        ("message.received", {"zapq.type": "image", "zapq.wamid": tracing.hashed("wamid.C")}),
    ]


def test_a_step_that_is_never_a_root_is_no_span_without_a_traced_parent(spans: InMemorySpanExporter) -> None:
    # Without a parent or a current span: the no-op, not a new trace
    assert tracing.span("webhook.apply", root=False) is tracing.span("x", root=False)
    # With a current span: its child
    with tracing.span("job process_webhook"), tracing.span("webhook.apply", root=False):
        inner = tracing.current_traceparent()
    job, apply = sorted(spans.get_finished_spans(), key=lambda s: s.name)
    assert (job.name, apply.name) == ("job process_webhook", "webhook.apply") and child_of(apply, job)
    assert inner is not None and f"{apply.context.span_id:016x}" in inner


def test_a_webhook_whose_trace_is_sampled_out_is_traced_nowhere(
    settings: Settings, db: Database, broker: Any, worker: dramatiq.Worker
) -> None:
    # Given tracing on with every new trace sampled out
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter, batch=False, sample_ratio=0.0)
    try:
        make_connection(db, phone_number_id=f.NUMBER_ID)
        payload = f.meta_payload(
            f.meta_change(messages=[f.meta_message("wamid.SAMPLEDOUT1", "text", {"body": TEXT}, sender=PHONE)])
        )
        # When a webhook comes in
        with TestClient(create_edge(settings)) as client:
            assert Edge(client, settings).meta(payload).status_code == 200
        # Then its job carries no context (a sampled-out one would cost the worker for nothing)
        ns = settings.redis_namespace
        jobs = [json.loads(raw) for raw in broker.client.hvals(f"{ns}:webhooks.msgs")]
        assert len(jobs) == 1 and not {"traceparent", "traceparents"} & set(jobs[0]["options"]), jobs
        # And once applied, no span was made anywhere, and its event row keeps no context
        drain(broker, worker)
        assert list(exporter.get_finished_spans()) == []
        with db.session() as session:
            kept = session.execute(text("SELECT traceparent FROM events WHERE type = 'message.received'")).all()
        assert [row[0] for row in kept] == [None]
    finally:
        tracing.shutdown()


def test_an_exception_fails_the_span_without_recording_its_text(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("message.send"):
        raise ValueError(f"bad number {PHONE}")
    [failed] = spans.get_finished_spans()
    assert not failed.status.is_ok and failed.status.description == "ValueError"
    assert not failed.events  # no exception event: its message may carry a phone number or a text


def test_the_send_keeps_its_context_in_the_message_row_and_its_sent_event(
    settings: Settings,
    db: Database,
    broker: Any,
    sender: Any,
    fake_meta: str,
    worker: dramatiq.Worker,
    spans: InMemorySpanExporter,
) -> None:
    # Given a traced send
    company, connection = make_connection(db)
    [message_id] = make_messages(db, company, connection, [PHONE], body=TEXT)
    with tracing.span("test.enqueue"):
        enqueue(broker, [message_id])
    drain(broker, worker)
    send = one(spans.get_finished_spans(), "message.send")
    context = f"00-{send.context.trace_id:032x}-{send.context.span_id:016x}-01"
    # Then its row and its "sent" event keep the send's context (its statuses and the event's deliveries join it)
    with db.session() as session:
        kept = session.execute(text("SELECT traceparent FROM messages WHERE id = :id"), {"id": message_id}).scalar()
        event = session.execute(
            text("SELECT traceparent FROM events WHERE type = 'message.status' AND data->>'status' = 'sent'")
        ).scalar()
    assert kept == event == context
    # And nothing of the trace is kept in Redis
    assert not list(broker.client.scan_iter(match=f"{settings.redis_namespace}:zapq:trace*"))


def test_a_status_of_an_untraced_send_is_a_span_of_the_webhook_applying_it(
    settings: Settings, db: Database, broker: Any, worker: dramatiq.Worker, spans: InMemorySpanExporter
) -> None:
    # Given a message whose send was not traced (its row keeps no context)
    company = f.company(db)
    connection = f.meta_connection(db, company)
    f.outbound(db, company, connection, external_id="wamid.UNTRACED")
    # When its status webhook comes, traced
    with TestClient(create_edge(settings)) as client:
        Ingest(Edge(client, settings), db, broker, worker).meta(
            f.meta_statuses(f.meta_status("wamid.UNTRACED", "read"))
        )
    # Then the status span is a child of the webhook's apply, in the webhook's trace, linking nothing
    finished = spans.get_finished_spans()
    status, apply = one(finished, "message.status"), one(finished, "webhook.apply")
    assert child_of(status, apply) and not status.links
    assert (status.attributes or {})["zapq.status"] == "read"
    # And the status event keeps the status span's context
    with db.session() as session:
        event = session.execute(text("SELECT traceparent FROM events WHERE type = 'message.status'")).scalar()
    assert event == f"00-{status.context.trace_id:032x}-{status.context.span_id:016x}-01"


def test_a_status_that_came_before_the_send_was_recorded_joins_the_send_when_the_sender_applies_it(
    settings: Settings, db: Database, spans: InMemorySpanExporter
) -> None:
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from libs.messages.status_store import StatusChange, apply_status, record_sent_async

    # Given a status kept pending (its message had no provider id yet), and the send's context
    company = f.company(db)
    connection = f.meta_connection(db, company)
    message_id = f.outbound(db, company, connection, status=MessageStatus.SENDING)
    with db.session() as session:
        change = StatusChange("wamid.EARLY", "delivered", connection_id=connection)
        assert apply_status(session, change) == "pending"
        session.commit()
    sent = "00-" + "5" * 32 + "-" + "6" * 16 + "-01"

    # When the sender records the send
    async def record() -> None:
        pool = AsyncConnectionPool(settings.libpq_url, min_size=1, max_size=1, open=False, kwargs={"autocommit": True})
        async with pool:
            await record_sent_async(pool, message_id, "wamid.EARLY", sent)

    asyncio.run(record())
    # Then both the "sent" and the "delivered" events keep the send's context
    with db.session() as session:
        rows = session.execute(text("SELECT data->>'status', traceparent FROM events ORDER BY id")).all()
    assert [tuple(row) for row in rows] == [("sent", sent), ("delivered", sent)]


def test_a_late_span_joins_the_parent_it_learns_else_the_span_current_when_it_began(
    spans: InMemorySpanExporter,
) -> None:
    sent = "00-" + "7" * 32 + "-" + "8" * 16 + "-01"
    with tracing.span("webhook.apply") as apply:
        # A parent learnt: its child, linking the span current when it began
        late = tracing.late_span("message.status", ids={"zapq.wamid": "wamid.L"}, attributes={"zapq.status": "read"})
        assert late is not None and late.trace_id == apply.trace_id
        tracing.end_late(late, sent)
        # None learnt (or one sampled out): a child of the span current when it began
        tracing.end_late(tracing.late_span("message.status", ids={}, attributes={}), None)
        tracing.end_late(tracing.late_span("message.status", ids={}, attributes={}), sent[:-2] + "00")
    joined, fallback, unsampled = by_name(spans.get_finished_spans(), "message.status")
    assert (joined.context.trace_id, joined.parent.span_id if joined.parent else None) == (
        int("7" * 32, 16),
        int("8" * 16, 16),
    )
    assert [link.context.span_id for link in joined.links] == [int(apply.span_id, 16)]
    assert joined.attributes == {"zapq.status": "read", "zapq.wamid": tracing.hashed("wamid.L")}
    assert child_of(fallback, one(spans.get_finished_spans(), "webhook.apply"))
    assert child_of(unsampled, one(spans.get_finished_spans(), "webhook.apply"))
    # With neither a parent nor a recorded span current: no span
    tracing.end_late(tracing.late_span("message.status", ids={}, attributes={}), None)
    assert len(by_name(spans.get_finished_spans(), "message.status")) == 3


def test_tracing_off_begins_no_late_span() -> None:
    assert not tracing.enabled()
    assert tracing.late_span("message.status", ids={"zapq.wamid": "w"}, attributes={}) is None
    tracing.end_late(None, "00-" + "7" * 32 + "-" + "8" * 16 + "-01")  # nothing to record, nothing raised


def test_an_event_row_keeps_the_context_of_a_recorded_span_only(spans: InMemorySpanExporter) -> None:
    # A recorded span: its own context
    with tracing.span("webhook.apply"):
        assert tracing.recorded_traceparent() == tracing.current_traceparent() is not None
    # Outside a span, or under a trace sampled out (nothing below it is recorded): none
    assert tracing.recorded_traceparent() is None
    with tracing.span("message.status", parent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"):
        assert tracing.current_traceparent() is not None and tracing.recorded_traceparent() is None
