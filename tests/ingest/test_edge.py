"""The webhook edge: handshake, authentication, validation, durable acceptance, dedup."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from libs.db.engine import Database
from libs.db.models import Webhook, WebhookStatus
from libs.ingest.edge import create_app
from libs.ops.demo import sample_webhook
from libs.settings import Settings
from libs.whatsapp.signature import sign_meta
from tests.helpers import all_keys, queue_length


@pytest.fixture
def client(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The edge app with its lifespan running (pool + Redis), against this session's database."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def count_webhooks(db: Database) -> int:
    with db.session() as session:
        return session.execute(select(func.count()).select_from(Webhook)).scalar_one()


def post_meta(client: TestClient, body: bytes, signature: str | None) -> Any:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    return client.post("/webhooks/meta", content=body, headers=headers)


def assert_nothing_stored(db: Database, broker: Any, settings: Settings) -> None:
    assert count_webhooks(db) == 0
    assert queue_length(broker.client, settings.redis_namespace, "webhooks") == 0
    assert all_keys(broker.client, settings.redis_namespace) == []


class TestHandshake:
    def test_valid_token_echoes_challenge(self, client: TestClient, settings: Settings) -> None:
        response = client.get(
            "/webhooks/meta",
            params={
                "hub.mode": "subscribe",
                "hub.verify_token": settings.meta_verify_token,
                "hub.challenge": "1158201444",
            },
        )
        assert response.status_code == 200
        assert response.text == "1158201444"

    @pytest.mark.parametrize(
        "params",
        [
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
            {"hub.mode": "unsubscribe", "hub.verify_token": "dev-verify-token", "hub.challenge": "1"},
            {"hub.challenge": "1"},
        ],
    )
    def test_wrong_token_or_mode_is_refused(self, client: TestClient, params: dict[str, str]) -> None:
        response = client.get("/webhooks/meta", params=params)
        assert response.status_code == 403
        assert "verification failed" in response.json()["error"]


class TestRejections:
    @pytest.mark.parametrize("signature", [None, "", "sha256=", "sha256=" + "0" * 64, "md5=abc", "garbage"])
    def test_missing_or_wrong_signature_is_401_and_stores_nothing(
        self, client: TestClient, db: Database, broker: Any, settings: Settings, signature: str | None
    ) -> None:
        response = post_meta(client, sample_webhook("wamid.X"), signature)
        assert response.status_code == 401
        assert "X-Hub-Signature-256" in response.json()["error"]
        assert_nothing_stored(db, broker, settings)

    def test_signature_with_another_secret_is_401(
        self, client: TestClient, db: Database, broker: Any, settings: Settings
    ) -> None:
        body = sample_webhook("wamid.X")
        assert post_meta(client, body, sign_meta(body, "not-the-app-secret")).status_code == 401
        assert_nothing_stored(db, broker, settings)

    @pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe\x00", b'{"object": "whatsapp_business_acc'])
    def test_malformed_json_is_400_and_stores_nothing(
        self, client: TestClient, db: Database, broker: Any, settings: Settings, body: bytes
    ) -> None:
        response = post_meta(client, body, sign_meta(body, settings.meta_app_secret))
        assert response.status_code == 400
        assert "JSON" in response.json()["error"]
        assert_nothing_stored(db, broker, settings)

    @pytest.mark.parametrize("payload", [[], {"object": "page"}, {"entry": []}, "text"])
    def test_wrong_object_is_400(
        self, client: TestClient, db: Database, broker: Any, settings: Settings, payload: Any
    ) -> None:
        body = json.dumps(payload).encode()
        response = post_meta(client, body, sign_meta(body, settings.meta_app_secret))
        assert response.status_code == 400
        assert_nothing_stored(db, broker, settings)

    def test_oversized_body_is_413(self, settings: Settings, db: Database, broker: Any) -> None:
        small = settings.model_copy(update={"webhook_max_bytes": 2048})
        with TestClient(create_app(small)) as client:
            body = b'{"object":"whatsapp_business_account","pad":"' + b"x" * 4096 + b'"}'
            response = post_meta(client, body, sign_meta(body, settings.meta_app_secret))
        assert response.status_code == 413
        assert_nothing_stored(db, broker, settings)


class TestAcceptance:
    def test_signed_webhook_is_stored_then_enqueued(
        self, client: TestClient, db: Database, broker: Any, settings: Settings
    ) -> None:
        body = sample_webhook("wamid.ACCEPT")
        response = post_meta(client, body, sign_meta(body, settings.meta_app_secret))
        assert response.status_code == 200
        webhook_id = response.json()["id"]
        client.portal.call(client.app.state.edge.writer.drain)  # type: ignore[union-attr,attr-defined]
        with db.session() as session:
            row = session.get(Webhook, webhook_id)
            assert row is not None
            assert row.body == body
            assert row.status == WebhookStatus.ENQUEUED
        assert queue_length(broker.client, settings.redis_namespace, "webhooks") == 1

    def test_identical_body_twice_makes_one_record_and_one_job(
        self, client: TestClient, db: Database, broker: Any, settings: Settings
    ) -> None:
        body = sample_webhook("wamid.DUP")
        signature = sign_meta(body, settings.meta_app_secret)
        first = post_meta(client, body, signature)
        second = post_meta(client, body, signature)
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.json() == {"status": "duplicate"}
        client.portal.call(client.app.state.edge.writer.drain)  # type: ignore[union-attr,attr-defined]
        assert count_webhooks(db) == 1
        assert queue_length(broker.client, settings.redis_namespace, "webhooks") == 1

    def test_uppercase_hex_signature_is_accepted(
        self, client: TestClient, db: Database, broker: Any, settings: Settings
    ) -> None:
        body = sample_webhook("wamid.UPPER")
        signature = "sha256=" + sign_meta(body, settings.meta_app_secret)[7:].upper()
        assert post_meta(client, body, signature).status_code == 200


class TestBaileys:
    def test_shared_secret_required(self, client: TestClient, db: Database, broker: Any, settings: Settings) -> None:
        body = json.dumps({"event": "connection.update", "instance": "x", "data": {"state": "open"}}).encode()
        assert client.post("/webhooks/baileys", content=body).status_code == 401
        assert (
            client.post(
                "/webhooks/baileys", content=body, headers={settings.baileys_secret_header: "wrong"}
            ).status_code
            == 401
        )
        assert_nothing_stored(db, broker, settings)
        ok = client.post(
            "/webhooks/baileys",
            content=body,
            headers={settings.baileys_secret_header: settings.baileys_webhook_secret},
        )
        assert ok.status_code == 200
        assert count_webhooks(db) == 1

    def test_event_must_be_named(self, client: TestClient, db: Database, broker: Any, settings: Settings) -> None:
        headers = {settings.baileys_secret_header: settings.baileys_webhook_secret}
        assert client.post("/webhooks/baileys", content=b'{"data":{}}', headers=headers).status_code == 400
        assert client.post("/webhooks/baileys", content=b"[1,", headers=headers).status_code == 400
        assert_nothing_stored(db, broker, settings)
