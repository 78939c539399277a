"""POST /api/messages with every kind: stored with its kind and payload; each of Meta's limits violated → 422
naming the field and the limit; a kind a Baileys bridge cannot send → 422 at once, nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from libs.api.kinds import MAX_CAPTION
from libs.db.engine import Database
from libs.db.models import Direction, Message, MessageStatus
from libs.events.types import MessageCreatedData
from tests.api.conftest import make_company
from tests.api.test_messages import count_messages
from tests.ingest.factories import events
from tests.sending.test_send_kinds import KINDS

TO = "16505551234"


def post(api: TestClient, company: dict[str, Any], **body: Any) -> Any:
    return api.post("/api/messages", json={"company_id": company["id"], "to": TO, **body})


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_is_stored_with_its_kind_and_payload(api: TestClient, company: dict[str, Any], name: str) -> None:
    # When a producer posts a message of the kind, replying to an earlier message (but a reaction)
    request = KINDS[name]
    [(kind, content)] = request.items()
    context = {} if kind == "reaction" else {"context": {"message_id": "wamid.EARLIER"}}
    response = post(api, company, **request, **context)
    # Then it is queued with its kind as type and its content (Meta's shape) under the kind's name
    assert response.status_code == 201, response.text
    message = response.json()
    assert message["type"] == kind and message["status"] == "queued"
    if kind != "template":
        assert message["payload"][kind] == content
    assert message["payload"].get("reply_to") == (None if kind == "reaction" else "wamid.EARLIER")
    # And the caption / interactive body is its searchable text
    if kind in ("image", "video", "document") and "caption" in content:
        assert message["body"] == content["caption"]


def test_text_and_template_keep_their_old_shape(api: TestClient, company: dict[str, Any]) -> None:
    text = post(api, company, text="hi", context={"message_id": "wamid.Q"}).json()
    assert (text["type"], text["body"], text["payload"]) == ("text", "hi", {"reply_to": "wamid.Q"})
    template = post(api, company, template={"name": "hello_world"}).json()
    assert template["payload"] == {"template": {"name": "hello_world", "language": "en_US", "components": []}}


def _buttons(n: int, title: str = "B") -> dict[str, Any]:
    buttons = [{"type": "reply", "reply": {"id": f"b{i}", "title": f"{title}{i}"}} for i in range(n)]
    return {"type": "button", "body": {"text": "Pick"}, "action": {"buttons": buttons}}


def _list(rows_per_section: list[int], **section: Any) -> dict[str, Any]:
    sections = [
        {"title": f"S{s}", "rows": [{"id": f"r{s}-{r}", "title": f"Row {r}"} for r in range(n)], **section}
        for s, n in enumerate(rows_per_section)
    ]
    return {"type": "list", "body": {"text": "Pick"}, "action": {"button": "Options", "sections": sections}}


LONG_TITLE = _buttons(1, "T" * 21)
CTA = KINDS["cta_url"]["interactive"]
LONG_HEADER = {"type": "header", "parameters": [{"type": "text", "text": "h" * 61}]}
QUICK_REPLY = {
    "type": "button",
    "sub_type": "quick_reply",
    "index": "0",
    "parameters": [{"type": "payload", "payload": "P"}],
}


@pytest.mark.parametrize(
    ("body", "field", "limit"),
    [
        ({"text": "x" * 4097}, "text", "at most 4096 characters"),
        ({"image": {"link": "https://x.io/a.jpg", "caption": "c" * (MAX_CAPTION + 1)}}, "image.caption", "1024"),
        ({"video": {"id": "1", "caption": "c" * 1025}}, "video.caption", "1024"),
        ({"document": {"id": "1", "caption": "c" * 1025}}, "document.caption", "1024"),
        ({"image": {"link": "ftp://x.io/a.jpg"}}, "image.link", "http:// or https://"),
        ({"image": {"link": "javascript:alert(1)"}}, "image.link", "http"),
        ({"image": {"id": "1", "link": "https://x.io/a.jpg"}}, "image", "exactly one of id or link"),
        ({"sticker": {}}, "sticker", "exactly one of id or link"),
        ({"audio": {"id": "1", "caption": "no"}}, "audio.caption", "Extra inputs"),
        ({"interactive": _buttons(4)}, "interactive.button.action.buttons", "at most 3 items"),
        ({"interactive": _buttons(0)}, "interactive.button.action.buttons", "at least 1 item"),
        ({"interactive": LONG_TITLE}, "interactive.button.action.buttons.0.reply.title", "at most 20 characters"),
        (
            {"interactive": {**_buttons(1), "header": {"type": "text", "text": "h" * 61}}},
            "interactive.button.header.text",
            "at most 60 characters",
        ),
        (
            {"interactive": {**_buttons(1), "footer": {"text": "f" * 61}}},
            "interactive.button.footer.text",
            "at most 60 characters",
        ),
        ({"interactive": {**_buttons(1), "body": {"text": "b" * 1025}}}, "interactive.button.body.text", "1024"),
        ({"interactive": _list([6, 5])}, "interactive.list.action", "at most 10 rows"),
        ({"interactive": _list([11])}, "interactive.list.action.sections.0.rows", "at most 10 items"),
        ({"interactive": _list([1, 1], title=None)}, "interactive.list.action", "needs a title"),
        (
            {"interactive": {**CTA, "action": {"parameters": {"display_text": "d" * 21, "url": "https://x.io"}}}},
            "interactive.cta_url.action.parameters.display_text",
            "at most 20 characters",
        ),
        (
            {"interactive": {**CTA, "action": {"parameters": {"display_text": "Go", "url": "file:///etc/passwd"}}}},
            "interactive.cta_url.action.parameters.url",
            "http",
        ),
        ({"interactive": {"type": "carousel", "body": {"text": "x"}}}, "interactive", "does not match any"),
        ({"location": {"latitude": 91, "longitude": 0}}, "location.latitude", "less than or equal to 90"),
        ({"contacts": []}, "contacts", "at least 1 item"),
        ({"contacts": [{"name": {"first_name": "J"}}]}, "contacts.0.name.formatted_name", "Field required"),
        ({"reaction": {"message_id": "wamid.X", "emoji": "😀"}, "context": {"message_id": "w"}}, "", "not context"),
        (
            {
                "template": {
                    "name": "t",
                    "components": [{"type": "header", "parameters": [{"type": "text", "text": "h" * 61}]}],
                }
            },
            "template.components.0.header.parameters.0.text",
            "at most 60 characters",
        ),
        (
            {
                "template": {
                    "name": "t",
                    "components": [
                        {
                            "type": "button",
                            "sub_type": "url",
                            "index": "0",
                            "parameters": [{"type": "payload", "payload": "P"}],
                        }
                    ],
                }
            },
            "template.components.0.button",
            "takes a text parameter",
        ),
        (
            {
                "template": {
                    "name": "t",
                    "components": [
                        {
                            "type": "button",
                            "sub_type": "quick_reply",
                            "index": "10",
                            "parameters": [{"type": "payload", "payload": "P"}],
                        }
                    ],
                }
            },
            "template.components.0.button.index",
            "pattern",
        ),
        ({"image": {"link": "https://x.io/a.jpg"}, "text": "both"}, "", "exactly one of text or template"),
    ],
)
def test_each_limit_violated_is_422_naming_field_and_limit(
    api: TestClient, company: dict[str, Any], db: Database, body: dict[str, Any], field: str, limit: str
) -> None:
    response = post(api, company, **body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert limit in error, error
    assert field in error, error
    assert count_messages(db) == 0


@pytest.fixture
def bridge_company(api: TestClient) -> dict[str, Any]:
    """A company whose only connection is a Baileys bridge."""
    created = make_company(api, "Bridge Co")
    connection = {
        "company_id": created["id"],
        "provider": "baileys",
        "bridge_url": "http://bridge:8080",
        "bridge_instance": "bridge-co",
        "bridge_api_key": "bridge-key-123",
    }
    response = api.post("/api/connections", json=connection)
    assert response.status_code == 201, response.text
    return created


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"template": {"name": "hello_world"}}, "cannot send template messages"),
        ({"contacts": [{"name": {"formatted_name": "No Phone"}}]}, "contacts.0.phones"),
    ],
)
def test_a_kind_the_bridge_cannot_send_is_refused_at_once(
    api: TestClient, bridge_company: dict[str, Any], db: Database, body: dict[str, Any], reason: str
) -> None:
    response = post(api, bridge_company, **body)
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"]
    assert count_messages(db) == 0


@pytest.mark.parametrize("name", ["image", "audio", "document", "sticker", "buttons", "list", "location", "reaction"])
def test_the_bridge_accepts_the_kinds_it_can_send(api: TestClient, bridge_company: dict[str, Any], name: str) -> None:
    response = post(api, bridge_company, **KINDS[name])
    assert response.status_code == 201, response.text


def test_the_openapi_document_describes_every_kind(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    props = spec["components"]["schemas"]["MessageIn"]["properties"]
    for kind in ("image", "video", "audio", "document", "sticker", "interactive", "location", "contacts", "reaction"):
        assert kind in props
    assert "ButtonInteractive" in spec["components"]["schemas"]


def campaign(api: TestClient, company: dict[str, Any], **body: Any) -> Any:
    connection_id = company["connection"]["id"] if "connection" in company else body.pop("connection_id")
    request = {"company_id": company["id"], "connection_id": connection_id, "name": "Launch", **body}
    return api.post("/api/campaigns", json=request)


def test_a_media_campaign_keeps_its_medium_and_caption(api: TestClient, company: dict[str, Any]) -> None:
    created = campaign(api, company, document={"link": "https://x.io/c.pdf", "filename": "c.pdf"}, text="Hi {name}")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["content_type"], body["body"]) == ("document", "Hi {name}")
    assert body["content"] == {"link": "https://x.io/c.pdf", "filename": "c.pdf"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"image": {"link": "https://x.io/a.jpg", "caption": "x"}}, "caption is its text"),
        ({"audio": {"link": "https://x.io/a.ogg"}, "text": "x"}, "audio takes no caption"),
        ({"image": {"link": "https://x.io/a.jpg"}, "text": "x" * 1025}, "at most 1024"),
        ({"image": {"link": "https://x.io/a.jpg"}, "video": {"link": "https://x.io/a.mp4"}}, "one medium"),
        ({"image": {"link": "gopher://x.io/a.jpg"}}, "http"),
        ({"image": {"link": "https://x.io/a.jpg"}, "text": "{0}"}, "placeholder"),
    ],
)
def test_a_bad_media_campaign_is_422(
    api: TestClient, company: dict[str, Any], body: dict[str, Any], reason: str
) -> None:
    response = campaign(api, company, **body)
    assert response.status_code == 422, response.text
    assert reason in response.json()["error"]


def test_a_bridge_campaign_of_a_template_is_refused(api: TestClient, bridge_company: dict[str, Any]) -> None:
    [connection] = api.get("/api/connections", params={"company_id": bridge_company["id"]}).json()
    refused = campaign(api, bridge_company, connection_id=connection["id"], template={"name": "hello_world"})
    assert refused.status_code == 422 and "cannot send template" in refused.json()["error"]
    image = campaign(api, bridge_company, connection_id=connection["id"], image={"link": "https://x.io/a.jpg"})
    assert image.status_code == 201, image.text


def test_message_created_carries_the_kind_and_content(api: TestClient, company: dict[str, Any], db: Database) -> None:
    created = post(api, company, **KINDS["location"]).json()
    [event] = [e for e in events(db, "message.created") if e["message_id"] == created["id"]]
    assert (event["type"], event["content"], event["template"]) == ("location", KINDS["location"]["location"], None)
    MessageCreatedData.model_validate(event)


def test_a_bridge_reaction_knows_whether_its_target_is_ours(
    api: TestClient, bridge_company: dict[str, Any], db: Database
) -> None:
    # Given one message of ours on the bridge connection (its provider id known)
    [connection] = api.get("/api/connections", params={"company_id": bridge_company["id"]}).json()
    with db.session() as session:
        ids = {"company_id": bridge_company["id"], "connection_id": connection["id"]}
        session.add(Message(**ids, direction=Direction.OUTBOUND, status=MessageStatus.SENT, recipient=TO, body="ours",
                            external_id="3EB0OURS"))  # fmt: skip
    # When reactions to it and to a message zapq does not have are posted
    ours = post(api, bridge_company, reaction={"message_id": "3EB0OURS", "emoji": "👍"}).json()
    theirs = post(api, bridge_company, reaction={"message_id": "3EB0THEIRS", "emoji": "👍"}).json()
    # Then the first is marked as reacting to our own message, for the bridge's key
    assert ours["payload"]["reaction_from_me"] is True
    assert theirs["payload"]["reaction_from_me"] is False
