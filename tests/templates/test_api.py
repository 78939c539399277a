"""Template sends and campaigns checked against the connection's catalogue at the API, before anything is
queued; ``GET /api/templates`` and ``POST /api/templates/sync``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.settings import Settings
from libs.templates import catalogue
from libs.templates.catalogue import Catalogue, TemplateCache
from tests.api.conftest import make_company, make_connection
from tests.fakes.meta import DEFAULT_TOKEN
from tests.templates.conftest import CATALOGUE, WABA, set_catalogue


@pytest.fixture
def api(settings: Settings, db: Database, broker: Any, fake_graph: str) -> Iterator[TestClient]:
    """The API pointed at the fake Graph API, with the token."""
    with TestClient(create_app(settings.model_copy(update={"meta_graph_url": fake_graph}))) as client:
        client.headers["authorization"] = f"Bearer {settings.api_token}"
        yield client


@pytest.fixture
def company(api: TestClient, fake_graph: str) -> dict[str, Any]:
    """A company with a Meta connection of the fake WABA (whose catalogue is :data:`CATALOGUE`), not synced."""
    set_catalogue(fake_graph, CATALOGUE)
    created = make_company(api)
    created["connection"] = make_connection(api, created["id"], waba_id=WABA, access_token=DEFAULT_TOKEN)
    return created


def send(api: TestClient, company: dict[str, Any], name: str, *components: dict[str, Any], language: str = "en_US",
         to: str = "5511988887777") -> httpx.Response:  # fmt: skip
    template = {"name": name, "language": language, "components": list(components)}
    body = {"company_id": company["id"], "connection_id": company["connection"]["id"], "to": to, "template": template}
    return api.post("/api/messages", json=body)


def params(kind: str, *values: str) -> dict[str, Any]:
    return {"type": kind, "parameters": [{"type": "text", "text": v} for v in values]}


def sync(api: TestClient, company: dict[str, Any]) -> dict[str, Any]:
    response = api.post("/api/templates/sync", json={"connection_id": company["connection"]["id"]})
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    return dict(result)


def graph_sends(fake_graph: str) -> int:
    return int(httpx.get(f"{fake_graph}/_fake/calls").json()["calls"])


def test_before_the_first_sync_template_sends_go_unchecked_with_one_warning(
    api: TestClient, company: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a connection whose catalogue never synced
    # When two sends of a template Meta does not have are made
    with caplog.at_level(logging.WARNING, logger="libs.templates.catalogue"):
        first = send(api, company, "not_in_the_catalogue")
        second = send(api, company, "not_in_the_catalogue", to="5511988887776")
    # Then both are accepted (Meta will judge them), and one WARNING says why they were not checked
    assert (first.status_code, second.status_code) == (201, 201)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "never synced" in warnings[0]
    assert f"zapq templates sync --connection {company['connection']['id']}" in warnings[0]


def test_once_synced_template_sends_are_checked_before_anything_is_queued(
    api: TestClient, company: dict[str, Any], fake_graph: str
) -> None:
    # Given a synced catalogue
    assert sync(api, company)["templates"] == len(CATALOGUE)
    # When a template is sent with the wrong number of body parameters
    wrong = send(api, company, "order_update", params("header", "A1"), params("body", "Ana"))
    # Then it is refused with 422, naming what is wrong
    assert wrong.status_code == 422
    details = wrong.json()["details"]
    assert details["reason"] == "template_parameters" and details["problems"] == ["body needs 2 parameters, got 1"]
    assert "order_update (en_US): body needs 2 parameters, got 1" in wrong.json()["error"]
    # And an unknown template, a missing translation and an unapproved template are refused too
    unknown = send(api, company, "no_such_template")
    assert unknown.status_code == 422 and unknown.json()["details"]["reason"] == "template_unknown"
    spanish = send(api, company, "order_update", language="es")
    assert spanish.status_code == 422 and "has no es translation (it has en_US, pt_BR)" in spanish.json()["error"]
    pending = send(api, company, "draft_promo", params("body", "x"))
    assert pending.status_code == 422 and pending.json()["details"] == {
        "reason": "template_not_approved", "status": "PENDING", "template": "draft_promo", "language": "en_US",
        "connection_id": company["connection"]["id"],
    }  # fmt: skip
    # When it is sent with the parameters the template needs
    right = send(api, company, "order_update", params("header", "A1"), params("body", "Ana", "A1"))
    # Then it is queued; nothing refused was stored, and Meta was never called
    assert right.status_code == 201, right.text
    listed = api.get("/api/messages", params={"company_id": company["id"]}).json()["messages"]
    assert [m["id"] for m in listed] == [right.json()["id"]]
    assert graph_sends(fake_graph) == 0


def test_campaigns_are_checked_when_created_started_and_resumed(
    api: TestClient, company: dict[str, Any], fake_graph: str
) -> None:
    # Given a synced catalogue with spring_sale ("Hi {{1}}, 20% off until {{2}}")
    sync(api, company)
    base = {"company_id": company["id"], "connection_id": company["connection"]["id"], "name": "spring"}
    # When a campaign fills one of its two body parameters from the CSV
    short = api.post("/api/campaigns", json={**base, "template": {"name": "spring_sale", "variables": ["name"]}})
    # Then it is refused, naming the count
    assert short.status_code == 422 and "body needs 2 parameters, got 1" in short.json()["error"]
    # When it fills both, it is created
    template = {"name": "spring_sale", "variables": ["name", "until"]}
    created = api.post("/api/campaigns", json={**base, "template": template})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    upload = api.post(f"/api/campaigns/{campaign_id}/recipients", content=b"phone,name,until\n5511911110001,Ana,May\n",
                      headers={"content-type": "text/csv"})  # fmt: skip
    assert upload.status_code == 200
    # When Meta pauses the template before the start (and the catalogue syncs)
    paused = [{**t, "status": "PAUSED"} if t["name"] == "spring_sale" else t for t in CATALOGUE]
    set_catalogue(fake_graph, paused)
    sync(api, company)
    # Then the start is refused with the template's status, and the campaign is still a draft
    start = api.post(f"/api/campaigns/{campaign_id}/start")
    assert start.status_code == 422 and start.json()["details"]["status"] == "PAUSED"
    assert api.get(f"/api/campaigns/{campaign_id}").json()["status"] == "draft"
    # And once it is approved again, the start goes through
    set_catalogue(fake_graph, CATALOGUE)
    sync(api, company)
    assert api.post(f"/api/campaigns/{campaign_id}/start").status_code == 200
    # When Meta disables it while the campaign runs (a webhook missed: the next sync finds it)
    disabled = [{**t, "status": "DISABLED"} if t["name"] == "spring_sale" else t for t in CATALOGUE]
    set_catalogue(fake_graph, disabled)
    assert sync(api, company)["paused_campaigns"] == [campaign_id]
    # Then the campaign is paused and shows why; it cannot be resumed while the template is disabled
    shown = api.get(f"/api/campaigns/{campaign_id}").json()
    assert (shown["status"], shown["status_reason"]) == ("paused", "template spring_sale (en_US) is DISABLED by Meta")
    resume = api.post(f"/api/campaigns/{campaign_id}/resume")
    assert resume.status_code == 422 and resume.json()["details"]["reason"] == "template_not_approved"


def test_list_filters_and_pages(api: TestClient, company: dict[str, Any]) -> None:
    connection_id = company["connection"]["id"]
    before = api.get("/api/templates", params={"connection_id": connection_id}).json()
    assert before["templates"] == [] and before["catalogue"]["checked"] is False
    sync(api, company)
    state = api.get("/api/templates", params={"connection_id": connection_id}).json()["catalogue"]
    assert state["checked"] and state["template_count"] == len(CATALOGUE) and state["last_error"] is None
    assert api.get("/api/templates", params={"connection_id": 999_999}).status_code == 404
    approved = api.get("/api/templates", params={"connection_id": connection_id, "status": "approved"}).json()
    assert [(t["name"], t["language"]) for t in approved["templates"]] == [
        ("hello_world", "en_US"), ("order_update", "en_US"), ("order_update", "pt_BR"), ("spring_sale", "en_US"),
    ]  # fmt: skip
    assert {t["company_id"] for t in approved["templates"]} == {company["id"]}
    first = api.get("/api/templates", params={"company_id": company["id"], "limit": 4}).json()
    assert first["has_more"] and first["after"] == f"{connection_id}:order_update:en_US"
    rest = api.get("/api/templates", params={"company_id": company["id"], "after": first["after"]}).json()
    names = [(t["name"], t["language"]) for t in rest["templates"]]
    assert names == [("order_update", "pt_BR"), ("spring_sale", "en_US")]
    assert not rest["has_more"] and rest["after"] is None
    assert api.get("/api/templates", params={"status": "no such!"}).status_code == 400
    assert api.get("/api/templates", params={"after": "x"}).status_code == 400


def test_sync_refusals(api: TestClient, company: dict[str, Any], fake_graph: str) -> None:
    assert api.post("/api/templates/sync", json={"connection_id": 999_999}).status_code == 404
    other = make_company(api, "Other")
    make_connection(api, other["id"], phone_number_id="pn-no-waba")
    none = api.post("/api/templates/sync", json={"company_id": other["id"]})
    assert none.status_code == 422 and "no Meta connection with a waba_id" in none.json()["error"]
    both = api.post("/api/templates/sync", json={"company_id": other["id"], "connection_id": 1})
    assert both.status_code == 422
    set_catalogue(fake_graph, CATALOGUE, fail_with=190)
    failed = api.post("/api/templates/sync", json={"connection_id": company["connection"]["id"]})
    assert failed.status_code == 502 and "meta error 190" in failed.json()["error"]
    # A company-wide sync answers each connection's outcome
    every = api.post("/api/templates/sync", json={"company_id": company["id"]}).json()["results"]
    assert every == [{"connection_id": company["connection"]["id"], "error": failed.json()["error"], "status": 502}]


def test_the_cache_reads_a_catalogue_once_per_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a cache with a 30 s TTL on a clock the test moves, over a loader that counts its reads
    reads: list[int] = []

    async def load(conn: Any, connection_id: int) -> Catalogue:
        reads.append(connection_id)
        return Catalogue(connection_id, "meta", None, {})

    monkeypatch.setattr(catalogue, "_load", load)
    now = [1000.0]
    cache = TemplateCache(ttl_s=30, clock=lambda: now[0])

    async def lookups() -> None:
        for _ in range(5):
            await cache.get(None, 7)  # type: ignore[arg-type]
        now[0] += 31
        await cache.get(None, 7)  # type: ignore[arg-type]
        cache.invalidate(7)
        await cache.get(None, 7)  # type: ignore[arg-type]

    asyncio.run(lookups())
    # Then five lookups within the TTL read once; after it, and after an invalidation, it is read again
    assert reads == [7, 7, 7]


def test_a_new_waba_id_forgets_the_old_catalogue(api: TestClient, company: dict[str, Any]) -> None:
    # Given a synced catalogue that refuses an unknown template
    sync(api, company)
    assert send(api, company, "only_in_the_new_waba").status_code == 422
    # When the connection is moved to another WABA
    connection_id = company["connection"]["id"]
    assert api.patch(f"/api/connections/{connection_id}", json={"waba_id": "555550000000001"}).status_code == 200
    # Then the old WABA's templates are gone, and sends go unchecked until the new catalogue syncs
    assert api.get("/api/templates", params={"connection_id": connection_id}).json()["templates"] == []
    assert send(api, company, "only_in_the_new_waba").status_code == 201
