"""Per-connection Baileys webhook secrets: each bridge instance posts to its connection's own URL with its own
secret; a secret never speaks for another instance, and the global secret works only while it is set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from libs.api.app import create_app as create_api
from libs.db.engine import Database
from libs.db.models import MessageStatus, Webhook, WebhookStatus
from libs.ingest.edge import create_app as create_edge
from libs.settings import Settings
from tests.helpers import drain, queue_length
from tests.ingest import factories as f

INSTANCE_A, INSTANCE_B = "company-a-main", "company-b-main"


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The operations API with the admin token."""
    with TestClient(create_api(settings)) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


@pytest.fixture
def edge(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The webhook edge."""
    with TestClient(create_edge(settings)) as client:
        yield client


def baileys_connection(api: TestClient, name: str, instance: str) -> dict[str, Any]:
    """A company and its Baileys connection made through the API; the answer (with the one-time secret)."""
    company = api.post("/api/companies", json={"name": name}).json()
    body = {
        "company_id": company["id"],
        "provider": "baileys",
        "bridge_url": "http://evolution.invalid:8080",
        "bridge_instance": instance,
        "bridge_api_key": f"{name}-bridge-key",
    }
    response = api.post("/api/connections", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def post(
    edge: TestClient, path: str, secret: str | None, payload: dict[str, Any], settings: Settings
) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers[settings.baileys_secret_header] = secret
    return edge.post(path, content=f.dumps(payload), headers=headers)


def stored(db: Database) -> int:
    with db.session() as session:
        return int(session.execute(text("SELECT count(*) FROM webhooks")).scalar_one())


def assert_nothing_stored(db: Database, broker: Any, settings: Settings) -> None:
    assert stored(db) == 0
    assert queue_length(broker.client, settings.redis_namespace, "webhooks") == 0


def upsert(instance: str) -> dict[str, Any]:
    data = {
        "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": f"3EB-{instance}"},
        "pushName": "Ana",
        "message": {"conversation": "hello"},
        "messageType": "conversation",
        "messageTimestamp": 1761046839,
    }
    return f.evolution("messages.upsert", data, instance=instance)


def test_creating_a_baileys_connection_answers_its_own_url_and_secret_once(
    api: TestClient, db: Database, settings: Settings
) -> None:
    created = baileys_connection(api, "a", INSTANCE_A)
    assert created["webhook_path"] == f"/webhooks/baileys/{created['webhook_key']}"
    assert created["webhook_secret"].startswith("whbs_") and len(created["webhook_secret"]) > 30
    # Never again: reads answer whether it is set, not what it is
    again = api.get(f"/api/connections/{created['id']}").json()
    assert again["has_webhook_secret"] is True and "webhook_secret" not in again
    assert created["webhook_secret"] not in api.get("/api/connections").text
    # And it is stored encrypted
    with db.session() as session:
        kept = session.execute(text("SELECT webhook_secret FROM connections")).scalar_one()
    assert kept.startswith("gAAAAA") and created["webhook_secret"] not in kept


def test_a_body_for_instance_a_with_b_s_secret_is_401_and_nothing_is_stored(
    api: TestClient, edge: TestClient, db: Database, broker: Any, settings: Settings
) -> None:
    # Given two companies' Baileys connections, each with its own URL and secret
    a = baileys_connection(api, "a", INSTANCE_A)
    b = baileys_connection(api, "b", INSTANCE_B)
    # When B's bridge (or whoever holds B's secret) posts an event naming A's instance, on B's URL or on A's
    attempts = [
        post(edge, b["webhook_path"], b["webhook_secret"], upsert(INSTANCE_A), settings),
        post(edge, a["webhook_path"], b["webhook_secret"], upsert(INSTANCE_A), settings),
        post(edge, "/webhooks/baileys", b["webhook_secret"], upsert(INSTANCE_A), settings),
        post(edge, a["webhook_path"], None, upsert(INSTANCE_A), settings),
        post(edge, "/webhooks/baileys/no-such-key", b["webhook_secret"], upsert(INSTANCE_B), settings),
        # nor does the global secret (while set) speak for an instance that has its own secret
        post(edge, "/webhooks/baileys", settings.baileys_webhook_secret, upsert(INSTANCE_A), settings),
    ]
    # Then each is refused with the reason, and nothing is stored or enqueued
    assert [r.status_code for r in attempts] == [401] * 6
    assert "another instance" in attempts[0].json()["error"]
    assert "its own webhook URL" in attempts[5].json()["error"]
    assert_nothing_stored(db, broker, settings)
    # While each secret on its own URL, for its own instance, is accepted
    assert post(edge, a["webhook_path"], a["webhook_secret"], upsert(INSTANCE_A), settings).status_code == 200
    assert post(edge, b["webhook_path"], b["webhook_secret"], upsert(INSTANCE_B), settings).status_code == 200
    assert stored(db) == 2


def test_a_status_on_a_s_url_never_moves_b_s_message(
    api: TestClient, edge: TestClient, db: Database, broker: Any, settings: Settings, worker: dramatiq.Worker
) -> None:
    # Given B's sent message whose bridge id A's bridge has learned
    a = baileys_connection(api, "a", INSTANCE_A)
    b = baileys_connection(api, "b", INSTANCE_B)
    victim = f.outbound(db, b["company_id"], b["id"], external_id="3EBVICTIM")
    # When A's bridge reports it read, on A's URL, for A's instance
    data = {"keyId": "3EBVICTIM", "remoteJid": "5511999999999@s.whatsapp.net", "fromMe": True, "status": "READ"}
    answer = post(
        edge,
        a["webhook_path"],
        a["webhook_secret"],
        f.evolution("messages.update", data, instance=INSTANCE_A),
        settings,
    )
    assert answer.status_code == 200
    edge.portal.call(edge.app.state.edge.writer.drain)  # type: ignore[attr-defined]
    drain(broker, worker)
    # Then B's message is untouched: statuses apply only to the messages of the connection they came for
    assert f.message(db, victim).status == MessageStatus.SENT
    with db.session() as session:
        assert [w.status for w in session.query(Webhook).all()] == [WebhookStatus.PROCESSED]
    # While the same report from B's bridge, on B's URL, moves it
    mine = f.evolution("messages.update", data, instance=INSTANCE_B)
    assert post(edge, b["webhook_path"], b["webhook_secret"], mine, settings).status_code == 200
    edge.portal.call(edge.app.state.edge.writer.drain)  # type: ignore[attr-defined]
    drain(broker, worker)
    assert f.message(db, victim).status == MessageStatus.READ


def test_a_new_secret_can_be_issued_and_the_old_one_stops_working(
    api: TestClient, edge: TestClient, db: Database, settings: Settings
) -> None:
    a = baileys_connection(api, "a", INSTANCE_A)
    issued = api.post(f"/api/connections/{a['id']}/webhook-secret")
    assert issued.status_code == 200, issued.text
    new = issued.json()
    assert new["webhook_secret"] != a["webhook_secret"] and new["webhook_path"] != a["webhook_path"]
    assert post(edge, a["webhook_path"], a["webhook_secret"], upsert(INSTANCE_A), settings).status_code == 401
    assert post(edge, new["webhook_path"], a["webhook_secret"], upsert(INSTANCE_A), settings).status_code == 401
    assert post(edge, new["webhook_path"], new["webhook_secret"], upsert(INSTANCE_A), settings).status_code == 200
    # A Meta connection has no webhook secret to issue
    company = api.post("/api/companies", json={"name": "m"}).json()
    meta = api.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-m", "access_token": "t"},
    ).json()
    assert "webhook_secret" not in meta
    refused = api.post(f"/api/connections/{meta['id']}/webhook-secret")
    assert refused.status_code == 409 and "baileys" in refused.json()["error"]
    assert api.post("/api/connections/999999/webhook-secret").status_code == 404


def test_the_global_secret_works_only_while_it_is_set(settings: Settings, db: Database, broker: Any) -> None:
    payload = upsert(INSTANCE_A)
    with TestClient(create_edge(settings)) as edge:
        assert post(edge, "/webhooks/baileys", settings.baileys_webhook_secret, payload, settings).status_code == 200
    retired = settings.model_copy(update={"baileys_webhook_secret": ""})
    with TestClient(create_edge(retired)) as edge:
        for secret in (settings.baileys_webhook_secret, "", None):
            answer = post(edge, "/webhooks/baileys", secret, payload, retired)
            assert answer.status_code == 401
            assert "retired" in answer.json()["error"]
    assert stored(db) == 1
