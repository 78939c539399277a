"""Syncing a connection's template catalogue from the Graph API (``libs.templates.actions``), every page of it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.campaigns.actions import start_due_campaigns
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignRecipient, CampaignStatus, Provider
from libs.refusals import InvalidError, NotFoundError, ProviderCallError
from libs.secrets import Secrets
from libs.settings import Settings
from libs.templates import actions
from libs.templates import graph as graph_module
from libs.templates.graph import Graph
from tests.fakes.meta_templates import template
from tests.sending.conftest import make_company_connection
from tests.templates.conftest import CATALOGUE, catalogue_row, list_calls, meta_connection, set_catalogue, stored


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_a_sync_reads_every_page_and_marks_the_catalogue_synced(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a WABA with 6 templates, listed 4 per page (so two pages), and a connection to it never synced
    monkeypatch.setattr(graph_module, "PAGE_SIZE", 4)
    set_catalogue(fake_graph, CATALOGUE)
    _, connection = meta_connection(db)
    assert catalogue_row(db, connection) is None
    # When its catalogue is synced
    result = actions.sync_connection(db, http, graph, secrets, connection)
    # Then both pages were read, and every template is stored with its status, category and components
    assert list_calls(fake_graph) == 2
    assert (result["templates"], result["removed"], result["paused_campaigns"]) == (6, 0, [])
    rows = stored(db, connection)
    assert sorted(rows) == sorted((t["name"], t["language"]) for t in CATALOGUE)
    order = rows[("order_update", "pt_BR")]
    assert (order.status, order.category) == ("APPROVED", "MARKETING")
    assert order.components is not None and order.components[1]["text"].startswith("Olá {{1}}")
    assert rows[("draft_promo", "en_US")].status == "PENDING"
    # And the catalogue is marked synced (from now on template sends are checked)
    marker = catalogue_row(db, connection)
    assert marker is not None and marker.synced_at is not None and marker.template_count == 6
    assert marker.last_error is None


def test_a_later_sync_replaces_the_catalogue(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    # Given a synced connection
    set_catalogue(fake_graph, CATALOGUE)
    _, connection = meta_connection(db)
    actions.sync_connection(db, http, graph, secrets, connection)
    # When Meta deletes two templates and pauses one, and the catalogue is synced again
    later = [t for t in CATALOGUE if t["name"] not in ("draft_promo", "bad_promo")]
    later = [{**t, "status": "PAUSED"} if t["name"] == "spring_sale" else t for t in later]
    set_catalogue(fake_graph, later)
    result = actions.sync_connection(db, http, graph, secrets, connection)
    # Then the deleted ones are gone and the paused one is PAUSED
    assert (result["templates"], result["removed"]) == (4, 2)
    rows = stored(db, connection)
    assert ("draft_promo", "en_US") not in rows and rows[("spring_sale", "en_US")].status == "PAUSED"


def test_a_failed_sync_keeps_the_last_catalogue_and_notes_the_error(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    # Given a synced connection
    set_catalogue(fake_graph, CATALOGUE)
    _, connection = meta_connection(db)
    actions.sync_connection(db, http, graph, secrets, connection)
    first = catalogue_row(db, connection)
    assert first is not None
    # When Meta refuses the next list (the token expired: code 190)
    set_catalogue(fake_graph, [template("new_one")], fail_with=190)
    with pytest.raises(ProviderCallError, match="meta error 190") as refused:
        actions.sync_connection(db, http, graph, secrets, connection)
    # Then it is refused as a provider failure (502), the catalogue is the last one, and the error is noted
    assert refused.value.status == 502
    assert len(stored(db, connection)) == len(CATALOGUE)
    marker = catalogue_row(db, connection)
    assert marker is not None and marker.synced_at == first.synced_at and "190" in (marker.last_error or "")
    # And the token is in no error
    assert "fake-meta-token" not in str(refused.value) and "fake-meta-token" not in (marker.last_error or "")


def test_refusals_name_what_is_missing(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    _, no_waba = meta_connection(db, waba_id=None)
    _, baileys = make_company_connection(
        db, provider=Provider.BAILEYS, bridge_url="http://127.0.0.1:1", bridge_instance="x", bridge_api_key="k"
    )
    with pytest.raises(InvalidError, match="has no waba_id"):
        actions.sync_connection(db, http, graph, secrets, no_waba)
    with pytest.raises(InvalidError, match="baileys connection"):
        actions.sync_connection(db, http, graph, secrets, baileys)
    with pytest.raises(NotFoundError, match="no connection 999999"):
        actions.sync_connection(db, http, graph, secrets, 999_999)
    assert list_calls(fake_graph) == 0


def test_the_scheduler_syncs_new_and_stale_catalogues_only(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    # Given two connections of the WABA (one synced just now), and one with no waba_id
    set_catalogue(fake_graph, CATALOGUE)
    _, fresh = meta_connection(db)
    _, new = meta_connection(db, phone_number_id="106540352242923")
    meta_connection(db, waba_id=None, phone_number_id="106540352242924")
    actions.sync_connection(db, http, graph, secrets, fresh)
    # When the scheduler's run looks for catalogues older than an hour
    results = actions.sync_due(db, http, graph, secrets, max_age_s=3600)
    # Then only the never-synced one is synced
    assert results == {new: None}
    assert len(stored(db, new)) == len(CATALOGUE)
    # And with a max age of zero both are synced again; a failure is reported per connection
    set_catalogue(fake_graph, CATALOGUE, fail_with=131000)
    results = actions.sync_due(db, http, graph, secrets, max_age_s=0)
    assert set(results) == {fresh, new} and all("131000" in (why or "") for why in results.values())


def test_a_due_campaign_whose_template_meta_paused_starts_paused_with_the_reason(
    db: Database, broker: Any, settings: Settings, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    # Given a synced catalogue in which spring_sale is PAUSED, and two campaigns due now: one sending it
    paused = [{**t, "status": "PAUSED"} if t["name"] == "spring_sale" else t for t in CATALOGUE]
    set_catalogue(fake_graph, paused)
    company, connection = meta_connection(db)
    actions.sync_connection(db, http, graph, secrets, connection)
    blocked = due_campaign(db, company, connection, "spring_sale")
    fine = due_campaign(db, company, connection, "hello_world")
    # When the scheduler starts due campaigns
    assert sorted(start_due_campaigns(db, broker.client, settings.redis_namespace)) == [blocked, fine]
    # Then the one sending the paused template is paused at once, with the reason; the other runs
    with db.session() as session:
        rows = {row.id: (str(row.status), row.status_reason) for row in session.query(Campaign).all()}
    assert rows == {
        blocked: ("paused", "template spring_sale (en_US) is PAUSED by Meta"),
        fine: ("running", None),
    }


def due_campaign(db: Database, company: int, connection: int, name: str) -> int:
    """A campaign with one recipient, scheduled a minute ago, sending template ``name``; its id."""
    with db.session() as session:
        row = Campaign(
            company_id=company, connection_id=connection, name=name, status=CampaignStatus.SCHEDULED,
            content_type="template", template={"name": name, "language": "en_US", "variables": []},
            start_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), recipients_count=1,
        )  # fmt: skip
        session.add(row)
        session.flush()
        session.add(CampaignRecipient(campaign_id=row.id, recipient="5511911110001", variables={}))
        return row.id


def test_a_waba_id_of_any_text_is_one_path_segment_not_a_server_error(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    # Given a connection whose stored waba_id holds a tab and a slash (the API stores any text; the contract run
    # found that httpx then refused the URL: a 500)
    _, connection = meta_connection(db, waba_id="12\t3/../x")
    # When its catalogue is synced
    with pytest.raises(ProviderCallError) as refused:
        actions.sync_connection(db, http, graph, secrets, connection)
    # Then the id went to Meta as one quoted segment, and Meta's refusal (no such WABA) is a provider failure
    assert refused.value.status == 502
    marker = catalogue_row(db, connection)
    assert marker is not None and marker.synced_at is None and marker.last_error


def test_an_access_token_that_is_not_ascii_is_a_provider_failure_not_a_server_error(
    db: Database, fake_graph: str, graph: Graph, secrets: Secrets, http: httpx.Client
) -> None:
    # Given a connection whose token (any text when saved) cannot go in an HTTP header
    _, connection = meta_connection(db, token="tøkén-ü")
    # When its catalogue is synced
    with pytest.raises(ProviderCallError, match="cannot be sent") as refused:
        actions.sync_connection(db, http, graph, secrets, connection)
    # Then it is a provider failure (502) naming why, without the token
    assert refused.value.status == 502 and "tøkén" not in str(refused.value)
