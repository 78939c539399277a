"""Two companies, A and B, each with a connection, a message, a contact, a campaign and a webhook endpoint, built
once per module through the API (admin token), and keys for A: the world the access tests probe.

The app runs with a key cache of 0 s (a revocation applies at once) and no rate limit; tests of those make their
own app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from libs.access import store as key_store
from libs.access.keys import GLOBAL_ONLY_SCOPES, SCOPES, generate
from libs.api.app import create_app
from libs.db.engine import Database
from libs.db.models import Base, Contact
from libs.settings import Settings
from tests.conftest import flush_namespace

COMPANY_SCOPES = [scope for scope in SCOPES if scope not in GLOBAL_ONLY_SCOPES]


@dataclass
class Company:
    """One company's ids and the secrets that must never reach another company."""

    id: int
    connection: int = 0
    message: int = 0
    contact: int = 0
    campaign: int = 0
    endpoint: int = 0
    media: str = ""
    secrets: list[str] = field(default_factory=list)


@dataclass
class World:
    client: TestClient
    admin: dict[str, str]
    a: Company
    b: Company
    settings: Settings
    db: Database
    #: Keys of A (the full text): every company scope.
    key_a: str = ""
    #: Per scope: a key with every scope (of its kind) but that one.
    without: dict[str, str] = field(default_factory=dict)
    #: A key of B (text and id), one of A revoked, one of A expired; an event of B (or an id no one has).
    b_key: str = ""
    b_key_id: str = ""
    revoked: str = ""
    expired: str = ""
    b_event: str = "evt_0"

    def auth(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def key(self, company_id: int | None, scopes: list[str], **extra: Any) -> dict[str, Any]:
        response = self.client.post(
            "/api/keys", json={"company_id": company_id, "scopes": scopes, **extra}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def stored_key(self, company_id: int | None, scopes: list[str], *, expires_at: dt.datetime) -> str:
        """A key written straight to the store (e.g. one already expired, which the API refuses to create)."""
        new = generate()
        with self.db.session() as session:
            key_store.insert_sync(session, key_id=new.key_id, secret_hash=new.secret_hash, company_id=company_id,
                                  name="", scopes=scopes, expires_at=expires_at)  # fmt: skip
        return new.token


def truncate(database: Database) -> None:
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def _company(client: TestClient, admin: dict[str, str], db: Database, name: str, phone: str) -> Company:
    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(path, json=body, headers=admin)
        assert response.status_code == 201, response.text
        return dict(response.json())

    company = Company(id=post("/api/companies", {"name": f"Company {name}"})["id"])
    token = f"EAAG-secret-token-of-{name}"
    company.secrets.append(token)
    company.connection = post("/api/connections", {
        "company_id": company.id, "provider": "meta", "name": f"number {name}", "phone_number_id": f"pn-{name}",
        "access_token": token, "display_phone_number": phone,
        "service_window": "off",  # free-form messages to numbers that never wrote
    })["id"]  # fmt: skip
    company.message = post("/api/messages", {"company_id": company.id, "to": phone, "text": f"hello {name}"})["id"]
    company.campaign = post("/api/campaigns", {
        "company_id": company.id, "connection_id": company.connection, "name": f"campaign {name}", "text": "hi {name}",
    })["id"]  # fmt: skip
    upload = client.post(f"/api/media?company_id={company.id}", headers=admin,
                         files={"file": (f"{name}.pdf", b"%PDF-1.4 " + name.encode(), "application/pdf")})  # fmt: skip
    assert upload.status_code == 201, upload.text
    company.media = upload.json()["id"]
    endpoint = post("/api/webhook-endpoints", {"company_id": company.id, "url": f"http://127.0.0.1:9/{name}"})
    company.endpoint = endpoint["id"]
    company.secrets.append(endpoint["secret"])
    with db.session() as session:
        contact = Contact(company_id=company.id, wa_id=phone.lstrip("+"), name=f"contact {name}")
        session.add(contact)
        session.flush()
        company.contact = contact.id
    return company


@pytest.fixture(scope="module")
def world(settings: Settings, session_db: Database, services: Any) -> Iterator[World]:
    """Companies A and B with one of everything, and keys for A (see the module docstring)."""
    truncate(session_db)
    flush_namespace(services.client, settings.redis_namespace)
    app_settings = settings.model_copy(update={"api_key_cache_seconds": 0.0, "api_rate_per_second": 0.0})
    with TestClient(create_app(app_settings)) as client:
        admin = {"authorization": f"Bearer {settings.api_token}"}
        a = _company(client, admin, session_db, "alpha", "+5511911110001")
        b = _company(client, admin, session_db, "bravo", "+5511922220002")
        w = World(client=client, admin=admin, a=a, b=b, settings=settings, db=session_db)
        w.key_a = w.key(a.id, COMPANY_SCOPES, name="A, every company scope")["key"]
        for scope in SCOPES:
            if scope == "admin":
                continue
            if scope in GLOBAL_ONLY_SCOPES:
                others = [s for s in SCOPES if s not in (scope, "admin")]
                w.without[scope] = w.key(None, others)["key"]
            else:
                w.without[scope] = w.key(a.id, [s for s in COMPANY_SCOPES if s != scope])["key"]
        w.without["admin"] = w.key(None, [s for s in SCOPES if s != "admin"])["key"]
        b_key = w.key(b.id, COMPANY_SCOPES)
        w.b_key, w.b_key_id = b_key["key"], b_key["key_id"]
        revoked = w.key(a.id, COMPANY_SCOPES)
        assert client.delete(f"/api/keys/{revoked['key_id']}", headers=admin).status_code == 200
        w.revoked = revoked["key"]
        w.expired = w.stored_key(a.id, COMPANY_SCOPES, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        events = client.get(f"/api/events?company_id={b.id}&last=1", headers=admin).json()["events"]
        if events:
            w.b_event = events[0]["id"]
        yield w
    truncate(session_db)
    flush_namespace(services.client, settings.redis_namespace)
