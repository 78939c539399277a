"""Event maintenance: retention pruning keeps what is still being delivered; the OpenAPI document publishes
every event's schema."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import text
from starlette.testclient import TestClient

from libs.db.engine import Database
from libs.events.maintenance import prune_events
from libs.events.types import DATA_MODELS
from tests.ingest import factories as f


def test_prune_drops_old_finished_events_and_keeps_open_ones(db: Database) -> None:
    company = f.company(db)
    with db.session() as session:
        endpoint = session.execute(
            text("INSERT INTO webhook_endpoints (company_id, url, secret) VALUES (:c, 'http://x', 's') RETURNING id"),
            {"c": company},
        ).scalar_one()
        ids = []
        for n, (age_days, state) in enumerate([(40, "delivered"), (40, "pending"), (40, None), (5, "delivered")]):
            event = session.execute(
                text(
                    "INSERT INTO events (company_id, type, conversation, occurred_at, data, created_at, seq) "
                    "VALUES (:c, 'message.received', 'contact:1', now(), '{}', now() - make_interval(days => :d), :s)"
                    " RETURNING id"
                ),
                {"c": company, "d": age_days, "s": n + 1},
            ).scalar_one()
            ids.append(event)
            if state is not None:
                session.execute(
                    text(
                        "INSERT INTO event_deliveries (endpoint_id, event_id, seq, conversation, state) "
                        "VALUES (:e, :ev, :s, 'contact:1', :st)"
                    ),
                    {"e": endpoint, "ev": event, "s": n + 1, "st": state},
                )
    # When the daily prune runs with a 30-day retention
    assert prune_events(db, 30) == 2
    # Then the old delivered event and the old event without deliveries are gone (their delivery rows too);
    # the old one still being delivered and the recent one stay
    with db.session() as session:
        left = [r[0] for r in session.execute(text("SELECT id FROM events ORDER BY id"))]
    assert left == [ids[1], ids[3]]
    assert prune_events(db, 30, now=dt.datetime.now(dt.UTC)) == 0


def test_openapi_publishes_every_event_schema(api: TestClient) -> None:
    document: dict[str, Any] = api.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for model in DATA_MODELS.values():
        assert model.__name__ in schemas
    assert "EventOut" in schemas and "EventPage" in schemas
    feed = document["paths"]["/api/events"]["get"]["responses"]["200"]
    assert feed["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventPage"}
    assert "text/event-stream" in document["paths"]["/api/events/stream"]["get"]["responses"]["200"]["content"]
