"""Campaigns: create, streamed CSV import, the state machine (one start enqueues once) and counters."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select
from starlette.testclient import TestClient

from libs import contracts
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import CampaignRecipient, Message, MessageStatus
from libs.rules.budget import Budget
from libs.settings import Settings
from tests.api.conftest import make_company, make_connection
from tests.helpers import queue_length


def make_campaign(api: TestClient, company: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {
        "company_id": company["id"],
        "connection_id": company["connection"]["id"],
        "name": "Black Friday",
        "text": "Hi {name}, {discount} off today",
        **extra,
    }
    response = api.post("/api/campaigns", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def upload(api: TestClient, campaign_id: int, data: bytes, chunk: int = 7) -> Any:
    return api.post(
        f"/api/campaigns/{campaign_id}/recipients", content=chunks(data, chunk), headers={"content-type": "text/csv"}
    )


def csv_rows(n: int, start: int = 0) -> bytes:
    lines = ["phone,name,discount"] + [f"+1 415 555 {start + i:04d},Name {i},{i % 50}%" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def recipients(db: Database, campaign_id: int) -> list[tuple[str, dict[str, Any]]]:
    with db.session() as session:
        rows = session.execute(
            select(CampaignRecipient.recipient, CampaignRecipient.variables)
            .where(CampaignRecipient.campaign_id == campaign_id)
            .order_by(CampaignRecipient.id)
        )
        return [(r, v) for r, v in rows]


def test_a_campaign_is_created_as_draft(api: TestClient, company: dict[str, Any]) -> None:
    campaign = make_campaign(api, company)
    assert campaign["status"] == "draft" and campaign["content_type"] == "text"
    assert campaign["progress"] == 0.0
    got = api.get(f"/api/campaigns/{campaign['id']}").json()
    assert got.pop("now") == {"pending": 0, "queued": 0, "sending": 0, "sent": 0, "delivered": 0, "read": 0,
                              "failed": 0, "cancelled": 0}  # fmt: skip
    assert got.pop("budget") is None  # nothing waits for tier budget
    assert got == campaign
    template = make_campaign(
        api, company, text=None, template={"name": "promo", "language": "pt_BR", "variables": ["name"]}
    )
    assert template["content_type"] == "template" and template["template"]["variables"] == ["name"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"text": None}, "exactly one of text or template"),
        ({"text": "Hi {0}"}, "placeholder"),
        ({"text": "Hi {name"}, "placeholder"),
    ],
)
def test_invalid_campaigns_are_422(
    api: TestClient, company: dict[str, Any], extra: dict[str, Any], reason: str
) -> None:
    body = {"company_id": company["id"], "connection_id": company["connection"]["id"], "name": "x", "text": "t"}
    response = api.post("/api/campaigns", json={**body, **extra})
    assert response.status_code == 422
    assert reason in response.json()["error"]


@pytest.mark.parametrize(
    "placeholder",
    ["{name:>9}", "{name:d}", "{name:{w}}", "{name!r}", "{a[0]}", "{a.b}", "{}", "{0}", "{ name }", "{name"],
)
def test_only_plain_name_placeholders_are_accepted(api: TestClient, company: dict[str, Any], placeholder: str) -> None:
    # Given a campaign text with anything but a {name} placeholder (a format spec, a conversion, an index, ...)
    body = {"company_id": company["id"], "connection_id": company["connection"]["id"], "name": "x"}
    # When it is created
    response = api.post("/api/campaigns", json={**body, "text": f"Hi {placeholder}, welcome"})
    # Then it is refused, naming the placeholder
    assert response.status_code == 422
    assert f"placeholder {placeholder}" in response.json()["error"]


def test_literal_braces_and_plain_names_are_accepted(api: TestClient, company: dict[str, Any]) -> None:
    campaign = make_campaign(api, company, text="{{Hi}} {name}, {{{discount}}} off {_x1}")
    assert campaign["body"] == "{{Hi}} {name}, {{{discount}}} off {_x1}"


def test_recipients_stream_in_with_variables_duplicates_and_rejects(
    api: TestClient, company: dict[str, Any], db: Database
) -> None:
    campaign = make_campaign(api, company)
    data = (
        '\ufeffPhone,name,note\n+1 (415) 555-0001,"Ana, the first","line one\nline two"\n'
        "14155550002,Bruno,\n14155550001,Ana again,dup\nnot-a-phone,Zed,\n14155550003,Short\n"
    ).encode()
    # When the CSV is uploaded in 5-byte chunks (splitting lines and a quoted field spanning two lines)
    response = upload(api, campaign["id"], data, chunk=5)
    # Then valid rows are stored once each, with their variables, and the bad ones reported
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["rows"], result["inserted"], result["duplicates"], result["rejected"]) == (5, 2, 1, 2)
    assert [e["row"] for e in result["errors"]] == [4, 5]
    assert result["campaign"]["recipients_count"] == 2
    assert recipients(db, campaign["id"]) == [
        ("14155550001", {"name": "Ana, the first", "note": "line one\nline two"}),
        ("14155550002", {"name": "Bruno", "note": ""}),
    ]


def test_a_large_upload_is_inserted_in_batches(api: TestClient, company: dict[str, Any], db: Database) -> None:
    campaign = make_campaign(api, company)
    response = upload(api, campaign["id"], csv_rows(2_500), chunk=4096)
    assert response.json()["inserted"] == 2_500
    assert api.get(f"/api/campaigns/{campaign['id']}").json()["recipients_count"] == 2_500


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "empty"), (b"name,city\nAna,Rio\n", "'phone' column"), (b'phone\n"1415555\n', "never closed"),
     (b"phone\n\xff\xfe\n", "UTF-8")],
)  # fmt: skip
def test_unreadable_uploads_are_400_and_store_nothing(
    api: TestClient, company: dict[str, Any], db: Database, data: bytes, reason: str
) -> None:
    campaign = make_campaign(api, company)
    response = upload(api, campaign["id"], data)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert recipients(db, campaign["id"]) == []


def test_start_enqueues_one_expansion_job_per_thousand_recipients_once(
    api: TestClient, company: dict[str, Any], broker: Any, settings: Settings
) -> None:
    campaign = make_campaign(api, company)
    upload(api, campaign["id"], csv_rows(2_001), chunk=65536)
    # When two starts race
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: api.post(f"/api/campaigns/{campaign['id']}/start"), range(2)))
    # Then one started it (3 slices of ≤ 1,000 recipients) and the other was refused
    assert sorted(a.status_code for a in answers) == [200, 409]
    started = next(a.json() for a in answers if a.status_code == 200)
    assert started["status"] == "running" and started["started_at"] is not None
    assert len(started["expansion_jobs"]) == 3
    assert queue_length(broker.client, settings.redis_namespace, contracts.CAMPAIGNS) == 3
    # And a later start is refused too, as is an upload into a running campaign
    assert api.post(f"/api/campaigns/{campaign['id']}/start").status_code == 409
    assert upload(api, campaign["id"], csv_rows(1, start=9000)).status_code == 409
    assert queue_length(broker.client, settings.redis_namespace, contracts.CAMPAIGNS) == 3


def test_expansion_shows_in_the_counters(
    api: TestClient, company: dict[str, Any], broker: Any, settings: Settings, db: Database
) -> None:
    campaign = make_campaign(api, company)
    upload(api, campaign["id"], csv_rows(10))
    started = api.post(f"/api/campaigns/{campaign['id']}/start").json()
    job = api.get(f"/api/jobs/{started['expansion_jobs'][0]}").json()
    assert job["state"] == "waiting" and job["queue"] == contracts.CAMPAIGNS
    with db.session() as session:
        first, last = (
            session.execute(
                select(CampaignRecipient.id)
                .where(CampaignRecipient.campaign_id == campaign["id"])
                .order_by(CampaignRecipient.id)
            )
            .scalars()
            .all()[::9]
        )
    expand_batch(
        db, broker.client, Lanes(settings.redis_namespace), contracts.ExpandCampaignBatch(campaign["id"], first, last)
    )
    counters = api.get(f"/api/campaigns/{campaign['id']}").json()
    assert counters["queued_count"] == 10 and counters["recipients_count"] == 10


def test_the_state_machine(api: TestClient, company: dict[str, Any]) -> None:
    campaign = make_campaign(api, company)
    cid = campaign["id"]
    assert api.post(f"/api/campaigns/{cid}/start").status_code == 409  # no recipients yet
    upload(api, cid, csv_rows(3))
    assert api.post(f"/api/campaigns/{cid}/pause").status_code == 409  # draft
    scheduled = api.post(f"/api/campaigns/{cid}/start", json={"start_at": "2999-01-01T00:00:00Z"})
    assert scheduled.json()["status"] == "scheduled"
    moved = api.post(f"/api/campaigns/{cid}/start", json={"start_at": "2998-06-01T09:00:00Z"}).json()
    assert moved["status"] == "scheduled" and moved["start_at"].startswith("2998-06-01")
    assert api.post(f"/api/campaigns/{cid}/start").json()["status"] == "running"
    assert api.post(f"/api/campaigns/{cid}/pause").json()["status"] == "paused"
    assert api.post(f"/api/campaigns/{cid}/pause").status_code == 409
    assert api.post(f"/api/campaigns/{cid}/resume").json()["status"] == "running"
    cancelled = api.post(f"/api/campaigns/{cid}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    for action in ("start", "pause", "resume", "cancel"):
        response = api.post(f"/api/campaigns/{cid}/{action}")
        assert response.status_code == 409 and "cancelled" in response.json()["error"]
    assert api.post(f"/api/campaigns/{cid}/start", json={"start_at": "soon"}).status_code == 422


def test_unknown_campaigns_are_404(api: TestClient) -> None:
    assert api.get("/api/campaigns/999").status_code == 404
    for action in ("start", "pause", "resume", "cancel"):
        assert api.post(f"/api/campaigns/999/{action}").status_code == 404
    assert upload(api, 999, csv_rows(1)).status_code == 404
    assert api.get("/api/campaigns?limit=0").status_code == 400


def test_campaigns_need_a_connection_of_the_company(api: TestClient, company: dict[str, Any]) -> None:
    other = make_company(api, "Other")
    make_connection(api, other["id"], phone_number_id="pn-x")
    body = {"company_id": other["id"], "connection_id": company["connection"]["id"], "name": "x", "text": "t"}
    response = api.post("/api/campaigns", json=body)
    # valid by the schema, but it names a connection that cannot be used: 422 (InvalidError, issue 17)
    assert response.status_code == 422 and "does not belong" in response.json()["error"]
    assert api.post("/api/campaigns", json={**body, "connection_id": 999}).status_code == 422


@pytest.mark.parametrize("action", ["resume", "cancel"])
def test_resume_and_cancel_release_parked_sends(
    api: TestClient, company: dict[str, Any], broker: Any, settings: Settings, action: str
) -> None:
    # Given a paused campaign one of whose sends the sender parked
    cid = make_campaign(api, company)["id"]
    upload(api, cid, csv_rows(1))
    api.post(f"/api/campaigns/{cid}/start")
    assert api.post(f"/api/campaigns/{cid}/pause").json()["status"] == "paused"
    lanes = Lanes(settings.redis_namespace)

    async def park() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        send = contracts.SEND_LOW.message(contracts.SendMessage(12345))
        await lanes.park_async(client, cid, company["id"], send)
        await client.aclose()

    asyncio.run(park())
    assert lanes.parked_campaigns(broker.client) == [cid]
    # When the campaign is resumed or cancelled through the API
    assert api.post(f"/api/campaigns/{cid}/{action}").status_code == 200
    # Then the parked send is back in the company's lane (the sender skips it if the campaign was cancelled)
    assert lanes.parked_campaigns(broker.client) == []
    assert lanes.backlog(broker.client) == 1
    assert broker.client.lrange(lanes.lane(company["id"]), 0, -1) != []


def test_now_counts_the_messages_in_each_status_at_this_moment(
    api: TestClient, company: dict[str, Any], broker: Any, settings: Settings, db: Database
) -> None:
    # Given a started campaign of 10 whose first 4 recipients were made messages
    campaign = make_campaign(api, company)
    upload(api, campaign["id"], csv_rows(10))
    api.post(f"/api/campaigns/{campaign['id']}/start").raise_for_status()
    assert api.get(f"/api/campaigns/{campaign['id']}").json()["now"]["pending"] == 10
    with db.session() as session:
        ids = (
            session.execute(
                select(CampaignRecipient.id)
                .where(CampaignRecipient.campaign_id == campaign["id"])
                .order_by(CampaignRecipient.id)
            )
            .scalars()
            .all()
        )
    expand_batch(
        db,
        broker.client,
        Lanes(settings.redis_namespace),
        contracts.ExpandCampaignBatch(campaign["id"], ids[0], ids[3]),
    )
    # When one of them is sent and one failed
    with db.session() as session:
        made = session.execute(select(Message).where(Message.campaign_id == campaign["id"])).scalars().all()
        made[0].status, made[1].status = MessageStatus.SENT, MessageStatus.FAILED
    # Then "now" is a state: 2 queued now (not the 4 ever queued), 1 sent, 1 failed, 6 not yet made messages
    body = api.get(f"/api/campaigns/{campaign['id']}").json()
    assert body["queued_count"] == 4  # the running total stays what it is
    now = body["now"]
    assert (now["pending"], now["queued"], now["sent"], now["failed"], now["delivered"]) == (6, 2, 1, 1, 0)
    listed = next(c for c in api.get("/api/campaigns").json() if c["id"] == campaign["id"])
    assert listed["now"] == now


def test_a_start_over_the_tier_budget_warns_and_the_campaign_shows_what_waits(
    api: TestClient, company: dict[str, Any], broker: Any, settings: Settings, db: Database
) -> None:
    # Given a number whose portfolio may reach 4 new people per 24 h (an operator's override) and 10 recipients
    connection = company["connection"]
    patched = api.patch(f"/api/connections/{connection['id']}", json={"messaging_limit": 4, "portfolio_id": "acme"})
    assert patched.status_code == 200 and patched.json()["messaging_limit"] == 4
    campaign = make_campaign(api, company)
    upload(api, campaign["id"], csv_rows(10))
    # When it starts
    started = api.post(f"/api/campaigns/{campaign['id']}/start")
    # Then it runs, with a warning (not an error) saying when it will finish at that pace
    assert started.status_code == 200 and started.json()["status"] == "running"
    [warning] = started.json()["warnings"]
    assert warning["code"] == "tier_budget" and warning["remaining"] == 4 and warning["limit"] == 4
    assert warning["finishes_at"] > "2026" and "wait for tier budget" in warning["message"]
    # When it fans out, the campaign shows the 6 sends waiting for tier budget and when room frees up
    with db.session() as session:
        recipient_ids = (
            session.execute(select(CampaignRecipient.id).where(CampaignRecipient.campaign_id == campaign["id"]))
            .scalars()
            .all()
        )
    batch = contracts.ExpandCampaignBatch(campaign["id"], min(recipient_ids), max(recipient_ids))
    expand_batch(db, broker.client, Lanes(settings.redis_namespace), batch)
    shown = api.get(f"/api/campaigns/{campaign['id']}").json()["budget"]
    assert shown["state"] == "waiting for tier budget" and shown["waiting"] == 6 and shown["frees_at"] > "2026"
    # When it is cancelled, its waiting sends are dropped with it
    assert api.post(f"/api/campaigns/{campaign['id']}/cancel").json()["status"] == "cancelled"
    assert api.get(f"/api/campaigns/{campaign['id']}").json()["budget"] is None
    names = Budget(settings.redis_namespace).names
    assert broker.client.hlen(names.entries) == broker.client.hlen(names.waiting_rows) == 0
    # And a Baileys connection cannot be given a messaging limit
    refused = api.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "baileys", "bridge_url": "http://bridge", "bridge_instance": "x",
              "bridge_api_key": "k", "messaging_limit": 10},
    )  # fmt: skip
    assert refused.status_code == 422
