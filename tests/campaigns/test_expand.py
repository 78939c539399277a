"""Campaign fan-out: exact counts, idempotent batches, per-recipient rendering, low-tier sends."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from libs import contracts
from libs.campaigns.expand import expand_batch, render
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, Message
from libs.settings import Settings
from tests.helpers import low_tier_waiting
from tests.sending.conftest import make_connection


def make_campaign(
    db: Database,
    recipients: int,
    *,
    template: dict[str, Any] | None = None,
    rate: int = 80,
    phone_number_id: str = "106540352242922",
    body: str = "Hi {name}, code {code}",
) -> tuple[int, int, int]:
    """A running campaign of a new company with ``recipients`` imported rows; returns (campaign, first id, last id)."""
    company, connection = make_connection(db, rate=rate, phone_number_id=phone_number_id)
    with db.session() as session:
        campaign = Campaign(
            company_id=company,
            connection_id=connection,
            name="Black Friday",
            status=CampaignStatus.RUNNING,
            content_type="template" if template else "text",
            body=body,
            template=template,
        )
        session.add(campaign)
        session.flush()
        session.execute(
            text(
                "INSERT INTO campaign_recipients (campaign_id, recipient, variables) "
                "SELECT :c, (5511900000000 + g)::text, jsonb_build_object('name', 'n' || g, 'code', g) "
                "FROM generate_series(1, :n) g"
            ),
            {"c": campaign.id, "n": recipients},
        )
        first, last = session.execute(
            text("SELECT min(id), max(id) FROM campaign_recipients WHERE campaign_id = :c"), {"c": campaign.id}
        ).one()
        return campaign.id, first, last


def count_messages(db: Database, campaign_id: int) -> int:
    with db.session() as session:
        return session.execute(select(func.count()).where(Message.campaign_id == campaign_id)).scalar_one()


def test_render_fills_variables_and_blanks_missing() -> None:
    assert render("Hi {name}, {missing}!", {"name": "Ana"}) == "Hi Ana, !"


def test_render_keeps_literal_braces_as_str_format_did() -> None:
    assert render("{{x}} {{{name}}} }}", {"name": "Ana"}) == "{x} {Ana} }"


@pytest.mark.parametrize(
    "body", ["{name:{w}}", "{name:>9}", "{name:d}", "{name!r}", "{name.upper}", "{name[0]}", "{}", "{0}", "}{name"]
)
def test_render_never_executes_a_format_spec(body: str) -> None:
    # Given a body stored before only {name} placeholders were accepted, and a hostile CSV column
    variables = {"name": "Ana", "w": ">2000000000"}
    # When it is rendered
    started = time.monotonic()
    rendered = render(f"Hi {body}!", variables)
    # Then what is not a {name} placeholder is text, kept as written, and nothing is formatted
    assert time.monotonic() - started < 0.1
    assert rendered == f"Hi {body}!".replace("{name}", "Ana")


def test_a_body_stored_before_validation_still_expands(db: Database, broker: Any, settings: Settings) -> None:
    # Given a running campaign whose body has a format spec that fails on its values (stored before the check)
    campaign_id, first, last = make_campaign(db, 5, body="Hi {name:d}, code {code}")
    # When its slice is expanded
    created = expand_batch(
        db, broker.client, Lanes(settings.redis_namespace), contracts.ExpandCampaignBatch(campaign_id, first, last)
    )
    # Then every row is created (the campaign can complete), the spec kept as text
    assert created == 5
    with db.session() as session:
        bodies = set(session.execute(select(Message.body).where(Message.campaign_id == campaign_id)).scalars())
    assert "Hi {name:d}, code 3" in bodies


def test_batches_create_each_row_once_and_enqueue_low_sends(db: Database, broker: Any, settings: Settings) -> None:
    campaign_id, first, last = make_campaign(db, 2_500)
    mid = first + 1_249
    slices = [
        contracts.ExpandCampaignBatch(campaign_id, first, mid),
        contracts.ExpandCampaignBatch(campaign_id, mid + 1, last),
    ]
    created = [expand_batch(db, broker.client, Lanes(settings.redis_namespace), s) for s in slices]
    assert created == [1_250, 1_250]
    assert count_messages(db, campaign_id) == 2_500
    assert low_tier_waiting(broker.client, settings.redis_namespace) == 2_500
    # A retried batch creates nothing new; its still-queued sends are enqueued again (claimed once by the sender).
    assert expand_batch(db, broker.client, Lanes(settings.redis_namespace), slices[0]) == 0
    assert count_messages(db, campaign_id) == 2_500
    with db.session() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None and campaign.queued_count == 2_500
        row = session.execute(
            select(Message).where(Message.campaign_id == campaign_id, Message.recipient == "5511900000007")
        ).scalar_one()
        assert row.body == "Hi n7, code 7" and row.priority == "low" and row.status == "queued"


def test_template_campaign_carries_variables_as_parameters(db: Database, broker: Any, settings: Settings) -> None:
    template = {"name": "order_update", "language": "en_US", "variables": ["code"]}
    campaign_id, first, last = make_campaign(db, 3, template=template)
    expand_batch(
        db, broker.client, Lanes(settings.redis_namespace), contracts.ExpandCampaignBatch(campaign_id, first, last)
    )
    with db.session() as session:
        payload = session.execute(
            select(Message.payload).where(Message.campaign_id == campaign_id, Message.recipient == "5511900000002")
        ).scalar_one()
    assert payload == {
        "template": {
            "name": "order_update",
            "language": "en_US",
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "2"}]}],
        }
    }


def test_cancelled_campaign_expands_nothing(db: Database, broker: Any, settings: Settings) -> None:
    campaign_id, first, last = make_campaign(db, 10)
    with db.session() as session:
        session.execute(text("UPDATE campaigns SET status = 'cancelled' WHERE id = :c"), {"c": campaign_id})
    assert (
        expand_batch(
            db, broker.client, Lanes(settings.redis_namespace), contracts.ExpandCampaignBatch(campaign_id, first, last)
        )
        == 0
    )
    assert count_messages(db, campaign_id) == 0
