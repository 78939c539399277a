"""POST/GET /api/messages: stored as queued, enqueued on the tier's queue, idempotent, validated."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from libs import contracts
from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus
from libs.settings import Settings
from tests.api.conftest import make_company, make_connection
from tests.helpers import queue_length


def count_messages(db: Database) -> int:
    with db.session() as session:
        return session.execute(select(func.count()).select_from(Message)).scalar_one()


def test_a_text_message_is_stored_queued_and_enqueued(
    api: TestClient, company: dict[str, Any], db: Database, broker: Any, settings: Settings
) -> None:
    # When a producer posts a text message with a formatted number
    response = api.post(
        "/api/messages", json={"company_id": company["id"], "to": "+55 (11) 98888-7777", "text": "Olá!"}
    )
    # Then it is created queued, on the company's connection, with the number as digits
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert body["recipient"] == "5511988887777"
    assert body["connection_id"] == company["connection"]["id"]
    assert body["priority"] == "normal"
    assert response.headers["location"] == f"/api/messages/{body['id']}"
    with db.session() as session:
        row = session.get(Message, body["id"])
        assert row is not None and row.status == MessageStatus.QUEUED and row.body == "Olá!"
    # And its send job waits on the normal tier's queue, where the job lookup finds it
    assert queue_length(broker.client, settings.redis_namespace, contracts.MESSAGES) == 1
    job = api.get(f"/api/jobs/{body['job_id']}").json()
    assert job["state"] == "waiting"
    assert job["queue"] == contracts.MESSAGES
    assert job["position"] == 1
    # And GET answers the same message
    assert api.get(f"/api/messages/{body['id']}").json() == body


@pytest.mark.parametrize(("priority", "queue"), sorted(contracts.TIER_QUEUES.items()))
def test_each_priority_goes_to_its_tier_queue(
    api: TestClient, company: dict[str, Any], broker: Any, settings: Settings, priority: str, queue: str
) -> None:
    response = api.post(
        "/api/messages",
        json={
            "company_id": company["id"],
            "to": "14155550100",
            "template": {"name": "order_update", "language": "en_US", "components": []},
            "priority": priority,
        },
    )
    assert response.status_code == 201, response.text
    assert response.json()["type"] == "template"
    assert response.json()["payload"] == {"template": {"name": "order_update", "language": "en_US", "components": []}}
    assert queue_length(broker.client, settings.redis_namespace, queue) == 1


def test_an_idempotency_key_makes_a_repeat_return_the_same_message(
    api: TestClient, company: dict[str, Any], db: Database, broker: Any, settings: Settings
) -> None:
    body = {"company_id": company["id"], "to": "14155550100", "text": "once"}
    first = api.post("/api/messages", json=body, headers={"Idempotency-Key": "order-42"})
    again = api.post("/api/messages", json=body, headers={"Idempotency-Key": "order-42"})
    other = api.post("/api/messages", json=body, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert count_messages(db) == 2
    assert queue_length(broker.client, settings.redis_namespace, contracts.MESSAGES) == 2


def test_idempotency_keys_are_per_company(api: TestClient, company: dict[str, Any], db: Database) -> None:
    second = make_company(api, "Other")
    make_connection(api, second["id"], phone_number_id="pn-other")
    for company_id in (company["id"], second["id"]):
        response = api.post(
            "/api/messages",
            json={"company_id": company_id, "to": "14155550100", "text": "hi"},
            headers={"Idempotency-Key": "same"},
        )
        assert response.status_code == 201
    assert count_messages(db) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"to": "14155550100", "text": "x"}, "company_id"),
        ({"to": "14155550100"}, "exactly one of text or template"),
        ({"to": "14155550100", "text": "x", "template": {"name": "t"}}, "exactly one of text or template"),
        ({"to": "12-34", "text": "x"}, "7 to 15 digits"),
        ({"to": "14155550100", "text": ""}, "text"),
        ({"to": "14155550100", "text": "x", "priority": "asap"}, "priority"),
        ({"to": "14155550100", "text": "x", "surprise": 1}, "surprise"),
    ],
)
def test_invalid_input_is_422_with_a_reason(
    api: TestClient, company: dict[str, Any], db: Database, body: dict[str, Any], reason: str
) -> None:
    payload = {"company_id": company["id"], **body} if "company_id" not in reason else body
    response = api.post("/api/messages", json=payload)
    assert response.status_code == 422
    assert reason in response.json()["error"]
    assert count_messages(db) == 0


def test_malformed_json_is_400(api: TestClient) -> None:
    response = api.post("/api/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "body is not valid JSON"
    assert api.post("/api/messages", json=[1, 2]).status_code == 400


def test_unknown_references_are_409(api: TestClient, company: dict[str, Any]) -> None:
    message = {"to": "14155550100", "text": "x"}
    assert "does not exist" in api.post("/api/messages", json={"company_id": 999, **message}).json()["error"]
    other = make_company(api, "No connection")
    response = api.post("/api/messages", json={"company_id": other["id"], **message})
    assert response.status_code == 409 and "no active connection" in response.json()["error"]
    foreign = {"company_id": other["id"], "connection_id": company["connection"]["id"], **message}
    response = api.post("/api/messages", json=foreign)
    assert response.status_code == 409 and "does not belong" in response.json()["error"]


def test_a_too_long_idempotency_key_is_400(api: TestClient, company: dict[str, Any]) -> None:
    response = api.post(
        "/api/messages",
        json={"company_id": company["id"], "to": "14155550100", "text": "x"},
        headers={"Idempotency-Key": "k" * 201},
    )
    assert response.status_code == 400


def test_unknown_message_ids_are_404(api: TestClient) -> None:
    assert api.get("/api/messages/12345").status_code == 404
    assert api.get("/api/messages/abc").status_code == 404
    assert api.get("/api/jobs/no-such-job").status_code == 404


def test_contact_names_the_other_party_in_both_directions(
    api: TestClient, company: dict[str, Any], db: Database
) -> None:
    # Given a customer's inbound message and an outbound one to another customer
    with db.session() as session:
        session.add(
            Message(
                company_id=company["id"],
                connection_id=company["connection"]["id"],
                direction=Direction.INBOUND,
                status=MessageStatus.RECEIVED,
                recipient="5511911112222",
                body="hi",
                external_id="wamid.IN-CONTACT",
            )
        )
    sent = api.post("/api/messages", json={"company_id": company["id"], "to": "+5511933334444", "text": "yo"}).json()
    # Then each answer's contact is the customer, whatever the direction; recipient stays (deprecated) alike
    page = api.get("/api/messages", params={"company_id": company["id"]}).json()["messages"]
    by_direction = {m["direction"]: m for m in page}
    assert by_direction["in"]["contact"] == by_direction["in"]["recipient"] == "5511911112222"
    assert by_direction["out"]["contact"] == sent["contact"] == "5511933334444"
