"""Webhooks applied in groups: one transaction per edge group commit, and one bad webhook fails alone."""

from __future__ import annotations

from typing import Any

from libs import contracts
from libs.db.models import Message, WebhookStatus
from libs.ingest.batcher import WORKER_GROUP, processing_jobs
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest


def _inbound(n: int) -> bytes:
    message = f.meta_message(f"wamid.GROUP{n}", "text", {"body": f"hello {n}"}, sender=f"55119000000{n:02d}")
    return f.dumps(f.meta_payload(f.meta_change(messages=[message])))


def test_one_webhook_is_one_job_and_many_are_groups() -> None:
    assert [m.actor_name for m in processing_jobs([7])] == ["process_webhook"]
    groups = processing_jobs(list(range(1, 71)))
    assert {m.actor_name for m in groups} == {"process_webhooks"}
    assert [len(m.kwargs["webhook_ids"]) for m in groups] == [WORKER_GROUP, WORKER_GROUP, 70 - 2 * WORKER_GROUP]
    assert sorted(i for m in groups for i in m.kwargs["webhook_ids"]) == list(range(1, 71))


def test_a_group_is_applied_once_and_announced(ingest: Ingest, db: Any, broker: Any, settings: Settings) -> None:
    # Given a connected number, four stored webhooks, one of them already processed
    f.meta_connection(db, f.company(db))
    ids = [f.webhook_row(db, _inbound(n), status=WebhookStatus.ENQUEUED) for n in range(4)]
    contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(ids[0]), broker=broker)
    ingest.drain()
    # When their group job runs, twice (at-least-once delivery)
    for _ in range(2):
        contracts.PROCESS_WEBHOOKS.send(contracts.ProcessWebhooks(ids), broker=broker)
        ingest.drain()
    # Then every webhook is processed, each message stored and announced once
    assert [f.webhook(db, i).status for i in ids] == [WebhookStatus.PROCESSED] * 4
    assert sorted(m.external_id for m in f.messages(db)) == [f"wamid.GROUP{n}" for n in range(4)]
    events = f.events(db, "message.received")
    assert sorted(e["external_id"] for e in events) == [f"wamid.GROUP{n}" for n in range(4)]
    assert f.dead_letters(db) == []


def test_a_bad_webhook_in_a_group_fails_alone(ingest: Ingest, db: Any, broker: Any, settings: Settings) -> None:
    # Given a group of three stored webhooks, the middle one unparseable (its message has no id)
    f.meta_connection(db, f.company(db))
    broken = f.meta_message("wamid.X", "text", {"body": "hi"})
    del broken["id"]
    bodies = [_inbound(1), f.dumps(f.meta_payload(f.meta_change(messages=[broken]))), _inbound(2)]
    ids = [f.webhook_row(db, body, status=WebhookStatus.ENQUEUED) for body in bodies]
    # When the group job runs
    contracts.PROCESS_WEBHOOKS.send(contracts.ProcessWebhooks(ids), broker=broker)
    ingest.drain()
    # Then the good ones are processed and stored once; the bad one is failed and dead-lettered on its own
    assert [f.webhook(db, i).status for i in ids] == [
        WebhookStatus.PROCESSED,
        WebhookStatus.FAILED,
        WebhookStatus.PROCESSED,
    ]
    assert sorted(m.external_id for m in f.messages(db)) == ["wamid.GROUP1", "wamid.GROUP2"]
    assert f.count(db, Message) == 2
    [letter] = f.dead_letters(db)
    assert (letter.actor_name, letter.kwargs, letter.reason) == ("process_webhook", {"webhook_id": ids[1]}, "permanent")


def test_a_group_stores_its_messages_once_in_order_with_their_contacts(ingest: Ingest, db: Any, broker: Any) -> None:
    # Given a connected number and four stored webhooks from one customer: a first text (no profile name), a
    # second with the profile name "Ana", the first again in another batch, and "STOP" (an opt-out keyword)
    f.meta_connection(db, f.company(db))

    def text(wamid: str, body: str, name: str | None = None, *, waba: str = f.WABA) -> bytes:
        value: dict[str, Any] = {"messages": [f.meta_message(wamid, "text", {"body": body})]}
        if name is not None:
            value["contacts"] = [{"profile": {"name": name}, "wa_id": f.CUSTOMER}]
        return f.dumps(f.meta_payload(f.meta_change(**value), waba=waba))

    bodies = [
        text("wamid.G1", "oi"),
        text("wamid.G2", "tudo bem?", "Ana"),
        text("wamid.G1", "oi", waba="again"),
        text("wamid.G3", "STOP"),
    ]
    ids = [f.webhook_row(db, body, status=WebhookStatus.ENQUEUED) for body in bodies]
    # When their group job runs (one transaction)
    contracts.PROCESS_WEBHOOKS.send(contracts.ProcessWebhooks(ids), broker=broker)
    ingest.drain()
    # Then each message is stored once, in order, for one contact named by the latest name sent
    assert [f.webhook(db, i).status for i in ids] == [WebhookStatus.PROCESSED] * 4
    assert [m.external_id for m in f.messages(db)] == ["wamid.G1", "wamid.G2", "wamid.G3"]
    [contact] = f.contacts(db)
    assert (contact.wa_id, contact.name) == (f.CUSTOMER, "Ana")
    assert {m.contact_id for m in f.messages(db)} == {contact.id}
    # And the conversation's events come in that order, the opt-out after the message that asked for it
    written = [(e.get("external_id"), e.get("status")) for e in f.events(db)]
    assert written == [("wamid.G1", None), ("wamid.G2", None), ("wamid.G3", None), (None, "opted_out")]
