"""``message_template_status_update`` webhooks (issue 18, item 3): the catalogue follows Meta, and a template
paused or disabled by Meta pauses the running campaigns using it, with the reason."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, Connection, WhatsAppTemplate
from libs.events.types import CampaignStatusData
from libs.whatsapp import parse_meta_webhook
from tests.fakes.meta_templates import template_status_webhook
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest

OTHER_WABA = "999990129340398"


def template_campaign(db: Database, company: int, connection: int, name: str, language: str = "en_US") -> int:
    """A running campaign sending template ``name``; its id."""
    with db.session() as session:
        row = Campaign(
            company_id=company, connection_id=connection, name=f"{name} blast", status=CampaignStatus.RUNNING,
            content_type="template", template={"name": name, "language": language, "variables": []},
        )  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def campaigns(db: Database) -> dict[int, tuple[str, str | None]]:
    with db.session() as session:
        rows = session.execute(select(Campaign).order_by(Campaign.id)).scalars()
        return {row.id: (str(row.status), row.status_reason) for row in rows}


def templates(db: Database) -> dict[tuple[int, str, str], tuple[str, str | None]]:
    with db.session() as session:
        rows = session.execute(select(WhatsAppTemplate)).scalars()
        return {(row.connection_id, row.name, row.language): (row.status, row.reason) for row in rows}


def test_the_webhook_is_parsed_with_its_identity_and_reason() -> None:
    batch = parse_meta_webhook(template_status_webhook(f.WABA, "spring_sale", "en_US", "PAUSED"))
    [update] = batch.template_statuses
    assert (update.waba_id, update.event, update.name, update.language) == (f.WABA, "PAUSED", "spring_sale", "en_US")
    assert update.template_id == "1689556908129835" and update.reason == "FIRST_PAUSE" and batch.skipped_changes == 0
    rejected = template_status_webhook(f.WABA, "promo", "pt_BR", "REJECTED", reason="INVALID_FORMAT")
    assert parse_meta_webhook(rejected).template_statuses[0].reason == "INVALID_FORMAT"


def test_a_paused_template_pauses_the_running_campaigns_using_it(ingest: Ingest, db: Database) -> None:
    # Given two Meta numbers of one WABA and one of another WABA, each with running template campaigns
    company = f.company(db)
    first = f.meta_connection(db, company)
    second = f.meta_connection(db, company, number_id="106540352242999")
    other = f.meta_connection(db, company, number_id="106540352240000")
    with db.session() as session:
        session.get_one(Connection, other).waba_id = OTHER_WABA
    using = template_campaign(db, company, first, "spring_sale")
    using_too = template_campaign(db, company, second, "spring_sale")
    other_template = template_campaign(db, company, first, "hello_world")
    other_language = template_campaign(db, company, first, "spring_sale", "pt_BR")
    other_waba = template_campaign(db, company, other, "spring_sale")
    # When Meta pauses spring_sale (en_US)
    row = ingest.meta(template_status_webhook(f.WABA, "spring_sale", "en_US", "PAUSED"))
    # Then the webhook is processed, and the template is PAUSED in the WABA's connections' catalogues only
    assert (row.status, row.item_count) == ("processed", 1)
    assert templates(db) == {
        (first, "spring_sale", "en_US"): ("PAUSED", "FIRST_PAUSE"),
        (second, "spring_sale", "en_US"): ("PAUSED", "FIRST_PAUSE"),
    }
    # And the campaigns sending it are paused with the reason; the others run on
    reason = "template spring_sale (en_US) is PAUSED by Meta: FIRST_PAUSE"
    assert campaigns(db) == {
        using: ("paused", reason),
        using_too: ("paused", reason),
        other_template: ("running", None),
        other_language: ("running", None),
        other_waba: ("running", None),
    }
    # And each pause is announced as campaign.status with the reason
    paused = [CampaignStatusData.model_validate(e) for e in f.events(db, "campaign.status")]
    assert sorted((e.campaign_id, e.status, e.reason) for e in paused) == [
        (using, "paused", reason),
        (using_too, "paused", reason),
    ]


@pytest.mark.parametrize(("event", "status"), [("APPROVED", "APPROVED"), ("REINSTATED", "APPROVED"),
                                               ("REJECTED", "REJECTED"), ("DISABLED", "DISABLED")])  # fmt: skip
def test_each_event_sets_the_status_and_only_paused_or_disabled_pause(
    ingest: Ingest, db: Database, event: str, status: str
) -> None:
    company = f.company(db)
    connection = f.meta_connection(db, company)
    campaign = template_campaign(db, company, connection, "spring_sale")
    ingest.meta(template_status_webhook(f.WABA, "spring_sale", "en_US", event))
    assert templates(db)[(connection, "spring_sale", "en_US")][0] == status
    expected: Any = "paused" if status == "DISABLED" else "running"
    assert campaigns(db)[campaign][0] == expected


def test_a_repeated_webhook_changes_nothing_more(ingest: Ingest, db: Database) -> None:
    company = f.company(db)
    connection = f.meta_connection(db, company)
    campaign = template_campaign(db, company, connection, "spring_sale")
    ingest.meta(template_status_webhook(f.WABA, "spring_sale", "en_US", "PAUSED"))
    webhook = template_status_webhook(f.WABA, "spring_sale", "en_US", "PAUSED")
    webhook["entry"][0]["time"] += 1  # a redelivery Meta signed anew: not a byte-identical duplicate
    ingest.meta(webhook)
    assert campaigns(db)[campaign][0] == "paused"
    assert len(f.events(db, "campaign.status")) == 1
