"""The customer-service window from inbound messages to the API's refusal (issue 18, item 1)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.db.models import Message, ServiceWindow
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest

DAY_S = 86_400


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API, authenticated."""
    with TestClient(create_app(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


def customer_writes(ingest: Ingest, wamid: str, at: float, *, sender: str = f.CUSTOMER, kind: str = "text") -> None:
    """A Meta webhook with one message from ``sender`` sent at epoch ``at``, through the edge and the worker."""
    body = {"body": "oi"} if kind == "text" else {"body": "changed", "wa_id": sender, "type": "user_changed_number"}
    item = f.meta_message(wamid, kind, body, sender=sender, timestamp=str(int(at)))
    ingest.meta(f.meta_payload(f.meta_change(messages=[item])))


def window_of(db: Database, connection_id: int, wa_id: str = f.CUSTOMER) -> dt.datetime | None:
    with db.session() as session:
        row = session.get(ServiceWindow, (connection_id, wa_id))
        return row.last_inbound_at if row is not None else None


def test_inbound_messages_move_the_window_forward_only(ingest: Ingest, db: Database) -> None:
    # Given a Meta connection
    connection = f.meta_connection(db, f.company(db))
    now = int(time.time())
    # When the customer writes, and then an older message of theirs arrives late
    customer_writes(ingest, "wamid.NEW", now - 60)
    customer_writes(ingest, "wamid.OLD", now - 7200)
    # Then the window starts at the newest message
    assert window_of(db, connection) == dt.datetime.fromtimestamp(now - 60, dt.UTC)
    # And a system notice (WhatsApp wrote it, not the customer) opens nothing
    customer_writes(ingest, "wamid.SYS", now, sender="16505550077", kind="system")
    assert window_of(db, connection, "16505550077") is None


def test_one_batch_writes_each_window_once_at_its_newest_message(ingest: Ingest, db: Database) -> None:
    # Given a Meta connection, and a customer whose window already starts an hour ago
    connection = f.meta_connection(db, f.company(db))
    now = int(time.time())
    customer_writes(ingest, "wamid.EARLIER", now - 3600)
    # When one webhook carries three of that customer's messages out of order, and one of another customer
    items = [
        f.meta_message("wamid.B1", "text", {"body": "a"}, timestamp=str(now - 300)),
        f.meta_message("wamid.B2", "text", {"body": "b"}, timestamp=str(now - 30)),
        f.meta_message("wamid.B3", "text", {"body": "c"}, timestamp=str(now - 7200)),
        f.meta_message("wamid.B4", "text", {"body": "d"}, sender="16505550088", timestamp=str(now - 10)),
    ]
    ingest.meta(f.meta_payload(f.meta_change(messages=items)))
    # Then each customer's window starts at their newest message, the older ones moving nothing back
    assert window_of(db, connection) == dt.datetime.fromtimestamp(now - 30, dt.UTC)
    assert window_of(db, connection, "16505550088") == dt.datetime.fromtimestamp(now - 10, dt.UTC)


def test_free_form_at_24h_plus_1s_is_refused_before_anything_is_queued(
    ingest: Ingest, db: Database, api: TestClient
) -> None:
    # Given a Meta connection enforcing the window (the default: the field omitted), and a customer whose
    # last message was sent 24 h + 1 s ago
    company = f.company(db)
    connection = f.meta_connection(db, company)
    customer_writes(ingest, "wamid.LAST", time.time() - DAY_S - 1)
    text = {"company_id": company, "connection_id": connection, "to": f.CUSTOMER, "text": "are you there?"}
    # When a free-form message is posted
    refused = api.post("/api/messages", json=text)
    # Then it is refused with the reason and when the window closed, and nothing was stored or queued
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"].startswith("outside_service_window: ")
    assert body["details"]["reason"] == "outside_service_window"
    closed = dt.datetime.fromisoformat(body["details"]["window_closed_at"])
    assert abs(closed.timestamp() - (time.time() - 1)) < 60
    with db.session() as session:
        assert session.scalars(select(Message).where(Message.direction == "out")).all() == []
    # And once the customer writes again, the free-form message is accepted (this worker does not send it:
    # nothing listens at the Graph URL; the sender's side is tests/sending/test_rules.py)
    customer_writes(ingest, "wamid.AGAIN", time.time())
    assert api.post("/api/messages", json=text).status_code == 201


def test_templates_are_always_allowed(ingest: Ingest, db: Database, api: TestClient) -> None:
    # Given a customer whose window closed a minute ago
    company = f.company(db)
    connection = f.meta_connection(db, company)
    customer_writes(ingest, "wamid.LAST", time.time() - DAY_S - 60)
    # When a template is posted
    template = {"company_id": company, "connection_id": connection, "to": f.CUSTOMER}
    template["template"] = {"name": "hello_world", "language": "en_US"}
    # Then it is accepted
    assert api.post("/api/messages", json=template).status_code == 201


def test_never_written_contacts_get_templates_only_and_off_or_baileys_are_exempt(db: Database, api: TestClient) -> None:
    # Given a Meta connection that enforces the window, one with it off, and a Baileys one
    company = f.company(db)
    enforced = f.meta_connection(db, company)
    text = {"company_id": company, "to": "16505550123", "text": "hello"}
    # When free-form text goes to a number that never wrote
    refused = api.post("/api/messages", json={**text, "connection_id": enforced})
    # Then it is refused, saying only a template can start the conversation
    assert refused.status_code == 422
    assert refused.json()["details"] == {"reason": "outside_service_window", "window_closed_at": None}
    assert "never written" in refused.json()["error"]
    # When the connection's window rule is turned off (a test number)
    patched = api.patch(f"/api/connections/{enforced}", json={"service_window": "off"})
    assert patched.status_code == 200 and patched.json()["service_window"] == "off"
    # Then the same message is accepted
    assert api.post("/api/messages", json={**text, "connection_id": enforced}).status_code == 201
    # And a Baileys connection is exempt
    bridge = f.baileys_connection(db, company)
    assert api.post("/api/messages", json={**text, "connection_id": bridge}).status_code == 201
    # And a bad value is refused with the field named
    bad = api.patch(f"/api/connections/{enforced}", json={"service_window": "sometimes"})
    assert bad.status_code == 422 and "service_window" in bad.text
    null = api.patch(f"/api/connections/{enforced}", json={"service_window": None})
    assert null.status_code == 422 and "service_window: a field given to PATCH is not null" in null.text
