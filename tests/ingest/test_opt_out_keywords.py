"""Inbound opt-out / opt-in keywords and the next campaign (issue 18, item 2)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from libs import contracts
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignStatus, Company, Message, OptOut
from libs.rules import optouts
from libs.settings import Settings
from tests.ingest import factories as f
from tests.ingest.conftest import Ingest
from tests.ingest.test_baileys import upsert


def writes(ingest: Ingest, wamid: str, body: str, *, sender: str = f.CUSTOMER) -> None:
    item = f.meta_message(wamid, "text", {"body": body}, sender=sender)
    ingest.meta(f.meta_payload(f.meta_change(messages=[item])))


def listed(db: Database, company_id: int) -> list[tuple[str, str]]:
    with db.session() as session:
        rows = session.execute(select(OptOut).where(OptOut.company_id == company_id)).scalars().all()
        return sorted((row.phone, row.source) for row in rows)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", optouts.OPT_OUT),
        ("  stop! ", optouts.OPT_OUT),
        ("Sáir", optouts.OPT_OUT),
        ("DESCADASTRAR.", optouts.OPT_OUT),
        ("Parar", optouts.OPT_OUT),
        ("please stop", None),
        ("stopped", None),
        ("Start", optouts.OPT_IN),
        ("", None),
    ],
)
def test_keywords_match_the_whole_message_case_and_accent_insensitively(body: str, expected: str | None) -> None:
    assert optouts.match(body, optouts.DEFAULT_OPT_OUT, optouts.DEFAULT_OPT_IN) == expected


def test_a_stop_message_suppresses_the_sender_for_the_next_campaign(
    ingest: Ingest, db: Database, broker: Any, settings: Settings
) -> None:
    # Given a company's Meta number, and a customer who writes "Parar!" (and another who writes "stop by later")
    company = f.company(db)
    connection = f.meta_connection(db, company)
    writes(ingest, "wamid.STOP", "Parar!")
    writes(ingest, "wamid.CHAT", "stop by later", sender="16505550002")
    # Then only the first is on the company's opt-out list, added by keyword, with its event
    assert listed(db, company) == [(f.CUSTOMER, "keyword")]
    [event] = f.events(db, "contact.opted_out")
    assert (event["contact"], event["source"]) == ({"wa_id": f.CUSTOMER}, "keyword")
    # When the company's next campaign fans out to both
    with db.session() as session:
        campaign = Campaign(
            company_id=company, connection_id=connection, name="Promo", status=CampaignStatus.RUNNING,
            content_type="text", body="Hi", recipients_count=2,
        )  # fmt: skip
        session.add(campaign)
        session.flush()
        campaign_id = campaign.id
        session.execute(
            text(
                "INSERT INTO campaign_recipients (campaign_id, recipient, variables) "
                "VALUES (:c, :a, '{}'), (:c, :b, '{}')"
            ),
            {"c": campaign_id, "a": f.CUSTOMER, "b": "16505550002"},
        )
        first, last = session.execute(
            text("SELECT min(id), max(id) FROM campaign_recipients WHERE campaign_id = :c"), {"c": campaign_id}
        ).one()
    expand_batch(
        db, broker.client, Lanes(settings.redis_namespace), contracts.ExpandCampaignBatch(campaign_id, first, last)
    )
    # Then the opted-out customer is skipped as suppressed, the other is queued
    with db.session() as session:
        rows = {
            m.recipient: m for m in session.execute(select(Message).where(Message.campaign_id == campaign_id)).scalars()
        }
        assert (rows[f.CUSTOMER].status, rows[f.CUSTOMER].failure_reason) == ("cancelled", "opted_out")
        assert rows["16505550002"].status == "queued"
        stored = session.get(Campaign, campaign_id)
        assert stored is not None and stored.suppressed_count == 1
    # When the customer writes "START"
    writes(ingest, "wamid.START", "START")
    # Then they are off the list again
    assert listed(db, company) == []
    assert [e["status"] for e in f.events(db, "contact.opted_in")] == ["opted_in"]


def test_company_keywords_replace_the_defaults_and_baileys_counts_too(ingest: Ingest, db: Database) -> None:
    # Given a company with its own keywords, on a Baileys number
    company = f.company(db)
    f.baileys_connection(db, company)
    with db.session() as session:
        row = session.get(Company, company)
        assert row is not None
        row.opt_out_keywords, row.opt_in_keywords = ["chega", "não quero"], ["quero"]
    # When the customer writes a default keyword, then one of the company's
    ingest.baileys(upsert("K1", from_me=False, text="STOP"))
    assert listed(db, company) == []
    ingest.baileys(upsert("K2", from_me=False, text="Nao QUERO"))
    # Then only the company's keyword counts
    assert listed(db, company) == [("5511999999999", "keyword")]
    # And a message the business sent from the phone never counts
    ingest.baileys(upsert("K3", from_me=True, text="quero"))
    assert listed(db, company) == [("5511999999999", "keyword")]
    ingest.baileys(upsert("K4", from_me=False, text="Quero"))
    assert listed(db, company) == []
