"""A signed Meta webhook travels edge → Postgres → Redis → worker, and its row ends processed."""

from __future__ import annotations

from typing import Any

import dramatiq
from starlette.testclient import TestClient

from libs.db.engine import Database
from libs.db.models import Webhook, WebhookStatus
from libs.ingest.edge import create_app
from libs.ops.demo import DEMO_PHONE_NUMBER_ID, sample_webhook
from libs.settings import Settings
from libs.whatsapp.signature import sign_meta
from tests.helpers import drain
from tests.ingest import factories as f


def test_webhook_end_to_end(settings: Settings, db: Database, broker: Any, worker: dramatiq.Worker) -> None:
    # The sample's number is registered (a webhook for a number without a connection is kept 'unmatched')
    f.meta_connection(db, f.company(db), number_id=DEMO_PHONE_NUMBER_ID)
    body = sample_webhook("wamid.E2E")
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/webhooks/meta",
            content=body,
            headers={
                "content-type": "application/json",
                "x-hub-signature-256": sign_meta(body, settings.meta_app_secret),
            },
        )
    assert response.status_code == 200
    drain(broker, worker, ["webhooks"])
    with db.session() as session:
        row = session.get(Webhook, response.json()["id"])
        assert row is not None
        assert row.status == WebhookStatus.PROCESSED
        assert row.processed_at is not None
    assert f.message_by_external_id(db, "wamid.E2E").body == "hello from the zapq demo"
