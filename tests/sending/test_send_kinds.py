"""Every message kind round-trips: the request body the API accepts is stored as it would store it, the sender
sends it, and the fake provider receives exactly Meta's (or Evolution's) documented body."""

from __future__ import annotations

from typing import Any

import dramatiq
import httpx
import pytest
from sqlalchemy import func, select

from libs import contracts
from libs.api.schemas import MessageIn
from libs.campaigns.expand import expand_batch
from libs.campaigns.lanes import Lanes
from libs.db.engine import Database
from libs.db.models import Campaign, CampaignRecipient, CampaignStatus, Message, MessageStatus
from libs.messages import actions
from libs.sending import media_ref
from libs.settings import Settings
from tests.helpers import drain
from tests.sending.conftest import enqueue, make_baileys_connection, make_connection, make_messages, messages, sends

TO = "16505551234"

#: A request body per kind (besides text) and the kind object Meta must receive: the same, as documented.
KINDS: dict[str, dict[str, Any]] = {
    "image": {"image": {"link": "https://x.io/a.jpg", "caption": "Our new shoe"}},
    "image_by_id": {"image": {"id": "1013859600285441"}},
    "video": {"video": {"link": "https://x.io/a.mp4", "caption": "clip"}},
    "audio": {"audio": {"id": "1013859600285442", "voice": True}},
    "document": {"document": {"link": "https://x.io/i.pdf", "caption": "Invoice", "filename": "inv.pdf"}},
    "sticker": {"sticker": {"link": "https://x.io/s.webp"}},
    "buttons": {
        "interactive": {
            "type": "button",
            "header": {"type": "image", "image": {"id": "2762702990552401"}},
            "body": {"text": "Move it?"},
            "footer": {"text": "Shop"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "change-button", "title": "Change"}},
                    {"type": "reply", "reply": {"id": "keep", "title": "Keep"}},
                ]
            },
        }
    },
    "list": {
        "interactive": {
            "type": "list",
            "header": {"type": "text", "text": "Shipping"},
            "body": {"text": "Pick one"},
            "footer": {"text": "Fast"},
            "action": {
                "button": "Options",
                "sections": [
                    {
                        "title": "Fast",
                        "rows": [{"id": "priority_express", "title": "Priority Express", "description": "1-2 days"}],
                    },
                    {"title": "Cheap", "rows": [{"id": "ground", "title": "Ground"}]},
                ],
            },
        }
    },
    "cta_url": {
        "interactive": {
            "type": "cta_url",
            "body": {"text": "See dates"},
            "action": {"name": "cta_url", "parameters": {"display_text": "See Dates", "url": "https://x.io/?c=1"}},
        }
    },
    "location": {
        "location": {"latitude": 37.758056, "longitude": -122.425332, "name": "HQ", "address": "1 Hacker Way"}
    },
    "contacts": {
        "contacts": [
            {
                "name": {"formatted_name": "John Smith", "first_name": "John"},
                "phones": [{"phone": "+1 650 555 1234", "type": "WORK", "wa_id": "16505551234"}],
                "emails": [{"email": "john@x.io", "type": "WORK"}],
                "org": {"company": "X"},
            }
        ]
    },
    "reaction": {"reaction": {"message_id": "wamid.TARGET", "emoji": "😀"}},
    "unreaction": {"reaction": {"message_id": "wamid.TARGET", "emoji": ""}},
    "template_media": {
        "template": {
            "name": "order_update",
            "language": "en_US",
            "components": [
                {
                    "type": "header",
                    "parameters": [
                        {"type": "document", "document": {"link": "https://x.io/i.pdf", "filename": "i.pdf"}}
                    ],
                },
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {
                            "type": "currency",
                            "currency": {"fallback_value": "$100.99", "code": "USD", "amount_1000": 100990},
                        },
                    ],
                },
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    "index": "0",
                    "parameters": [{"type": "payload", "payload": "STOP"}],
                },
                {
                    "type": "button",
                    "sub_type": "url",
                    "index": 1,
                    "parameters": [{"type": "text", "text": "order/123"}],
                },
            ],
        }
    },
}


def stored(db: Database, company: int, connection: int, request: dict[str, Any]) -> int:
    """The queued row the API would store for ``request`` (validated by the API's model, same payload)."""
    body = MessageIn.model_validate({"company_id": company, "to": TO, **request})
    new = actions.NewMessage(
        company_id=company,
        to=body.to,
        text=body.text,
        template=body.template.content() if body.template is not None else None,
        kind=body.kind,
        content=body.content() if body.template is None else None,
        reply_to=body.context.message_id if body.context is not None else None,
    )
    [message_id] = make_messages(
        db, company, connection, [TO], body=new.text, type=actions.kind_of(new), payload=actions.payload_of(new)
    )
    return message_id


def kind_sends(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/_fake/kind-sends").json()["sends"])


def test_every_kind_reaches_meta_as_documented(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker
) -> None:
    # Given one message of every kind on a Meta connection, each but the reaction a reply to an earlier message
    company, connection = make_connection(db)
    ids = {}
    for name, request in KINDS.items():
        context = {} if "reaction" in request else {"context": {"message_id": "wamid.EARLIER"}}
        ids[name] = stored(db, company, connection, {**request, **context})
    # When their jobs run
    enqueue(broker, list(ids.values()))
    drain(broker, worker)
    # Then the Graph API received each once, its kind object exactly as the request gave it (Meta's shape)
    by_ref = {int(s["client_ref"]): s["payload"] for s in sends(fake_meta)}
    assert sorted(by_ref) == sorted(ids.values())
    for name, request in KINDS.items():
        [(kind, content)] = request.items()
        sent = by_ref[ids[name]]
        assert sent["type"] == kind and sent["to"] == TO
        if kind == "template":
            components = [{**c, "index": str(c["index"])} if "index" in c else c for c in content["components"]]
            assert sent["template"] == {"name": "order_update", "language": {"code": "en_US"}, "components": components}
        else:
            assert sent[kind] == content, name
        assert sent.get("context") == (None if kind == "reaction" else {"message_id": "wamid.EARLIER"})
    # And every row is sent with the wamid Meta answered
    assert all(row.status == MessageStatus.SENT and row.external_id for row in messages(db, list(ids.values())))


#: What the Evolution bridge must receive for each kind it can send: endpoint and body.
EVOLUTION: dict[str, tuple[str, dict[str, Any]]] = {
    "image": (
        "sendMedia",
        {"number": TO, "mediatype": "image", "media": "https://x.io/a.jpg", "caption": "Our new shoe"},
    ),
    "video": ("sendMedia", {"number": TO, "mediatype": "video", "media": "https://x.io/a.mp4", "caption": "clip"}),
    "audio": ("sendWhatsAppAudio", {"number": TO, "audio": "1013859600285442"}),
    "document": (
        "sendMedia",
        {
            "number": TO,
            "mediatype": "document",
            "media": "https://x.io/i.pdf",
            "caption": "Invoice",
            "fileName": "inv.pdf",
        },
    ),
    "sticker": ("sendSticker", {"number": TO, "sticker": "https://x.io/s.webp"}),
    "buttons": (
        "sendButtons",
        {
            "number": TO,
            "title": "Move it?",
            "footer": "Shop",
            "buttons": [
                {"type": "reply", "displayText": "Change", "id": "change-button"},
                {"type": "reply", "displayText": "Keep", "id": "keep"},
            ],
        },
    ),
    "list": (
        "sendList",
        {
            "number": TO,
            "title": "Shipping",
            "description": "Pick one",
            "footerText": "Fast",
            "buttonText": "Options",
            "sections": [
                {
                    "title": "Fast",
                    "rows": [{"title": "Priority Express", "rowId": "priority_express", "description": "1-2 days"}],
                },
                {"title": "Cheap", "rows": [{"title": "Ground", "rowId": "ground"}]},
            ],
        },
    ),
    "cta_url": (
        "sendButtons",
        {
            "number": TO,
            "title": "See dates",
            "buttons": [{"type": "url", "displayText": "See Dates", "url": "https://x.io/?c=1"}],
        },
    ),
    "location": (
        "sendLocation",
        {"number": TO, "latitude": 37.758056, "longitude": -122.425332, "name": "HQ", "address": "1 Hacker Way"},
    ),
    "contacts": (
        "sendContact",
        {
            "number": TO,
            "contact": [
                {
                    "fullName": "John Smith",
                    "phoneNumber": "+1 650 555 1234",
                    "wuid": "16505551234",
                    "organization": "X",
                    "email": "john@x.io",
                }
            ],
        },
    ),
    "reaction": (
        "sendReaction",
        {"key": {"remoteJid": f"{TO}@s.whatsapp.net", "fromMe": False, "id": "wamid.TARGET"}, "reaction": "😀"},
    ),
    "unreaction": (
        "sendReaction",
        {"key": {"remoteJid": f"{TO}@s.whatsapp.net", "fromMe": False, "id": "wamid.TARGET"}, "reaction": ""},
    ),
}


def test_every_bridge_kind_reaches_evolution_on_its_endpoint(
    db: Database, broker: Any, sender: Any, fake_evolution: str, worker: dramatiq.Worker
) -> None:
    # Given one message of every kind the bridge sends, on a Baileys connection
    company, connection = make_baileys_connection(db, fake_evolution)
    ids = {name: stored(db, company, connection, KINDS[name]) for name in EVOLUTION}
    # When their jobs run
    enqueue(broker, list(ids.values()))
    drain(broker, worker)
    # Then the bridge got each once, on its endpoint, with Evolution's body
    got = kind_sends(fake_evolution)
    assert len(got) == len(EVOLUTION)
    by_key = {s["key_id"]: s for s in got}
    for name, row in zip(ids, messages(db, list(ids.values())), strict=True):
        assert row.status == MessageStatus.SENT, name
        send = by_key[row.external_id]
        assert (send["endpoint"], send["body"]) == EVOLUTION[name], name


def test_a_bridge_reply_quotes_the_original(
    db: Database, broker: Any, sender: Any, fake_evolution: str, worker: dramatiq.Worker
) -> None:
    company, connection = make_baileys_connection(db, fake_evolution)
    message_id = stored(db, company, connection, {**KINDS["image"], "context": {"message_id": "3EB0ORIGINAL"}})
    enqueue(broker, [message_id])
    drain(broker, worker)
    [send] = kind_sends(fake_evolution)
    assert send["body"]["quoted"] == {"key": {"id": "3EB0ORIGINAL"}}


@pytest.mark.parametrize("kind", ["image", "buttons", "location"])
def test_meta_refusing_a_kind_fails_the_message_for_good(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, kind: str
) -> None:
    # Given a stored message whose content Meta refuses (a link that is not http(s), written around the API)
    company, connection = make_connection(db)
    request = KINDS[kind]
    broken: dict[str, Any] = {
        "image": {"link": "ftp://x.io/a.jpg"},
        "buttons": {**request["interactive"], "action": {"buttons": []}} if kind == "buttons" else None,
        "location": {"latitude": 200, "longitude": 0},
    }[kind]
    field = next(iter(request))
    [message_id] = make_messages(db, company, connection, [TO], body=None, type=field, payload={field: broken})
    # When its job runs
    enqueue(broker, [message_id])
    drain(broker, worker)
    # Then Meta's 400 (code 100) fails it, nothing was accepted
    [row] = messages(db, [message_id])
    assert (row.status, row.error_code) == (MessageStatus.FAILED, 100)
    assert sends(fake_meta) == []


def test_a_media_campaign_sends_each_recipient_the_image_with_their_caption(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, settings: Settings
) -> None:
    # Given a running image campaign whose caption has a placeholder, with three recipients
    company, connection = make_connection(db)
    with db.session() as session:
        campaign = Campaign(
            company_id=company,
            connection_id=connection,
            name="Launch",
            status=CampaignStatus.RUNNING,
            content_type="image",
            body="Hi {name}, meet the new shoe",
            content={"link": "https://x.io/shoe.jpg"},
        )
        session.add(campaign)
        session.flush()
        session.add_all(
            CampaignRecipient(campaign_id=campaign.id, recipient=f"551190000000{i}", variables={"name": f"n{i}"})
            for i in range(3)
        )
        session.flush()
        campaign_id = campaign.id
        first, last = session.execute(
            select(func.min(CampaignRecipient.id), func.max(CampaignRecipient.id)).where(
                CampaignRecipient.campaign_id == campaign_id
            )
        ).one()
    # When its slice is expanded and the sends run
    lanes = Lanes(settings.redis_namespace)
    assert expand_batch(db, broker.client, lanes, contracts.ExpandCampaignBatch(campaign_id, first, last)) == 3
    with db.session() as session:
        rows = session.execute(select(Message).where(Message.campaign_id == campaign_id)).scalars().all()
        ids = [row.id for row in rows]
        assert {(row.type, row.body) for row in rows} == {("image", f"Hi n{i}, meet the new shoe") for i in range(3)}
    lanes.feed(broker.client)
    drain(broker, worker)
    # Then Meta received one image per recipient, the caption rendered for each
    got = {s["to"]: s["payload"]["image"] for s in sends(fake_meta)}
    assert got == {
        f"551190000000{i}": {"link": "https://x.io/shoe.jpg", "caption": f"Hi n{i}, meet the new shoe"}
        for i in range(3)
    }
    assert all(row.status == MessageStatus.SENT for row in messages(db, ids))


def test_media_references_pass_the_resolve_seam_and_the_stored_payload_stays(
    db: Database, broker: Any, sender: Any, fake_meta: str, worker: dramatiq.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a resolver that turns zapq media ids into Meta ids (as media storage will), per connection
    seen: list[tuple[dict[str, Any], str]] = []

    async def resolve(ref: dict[str, Any], connection: Any, *, resolver: Any = None) -> dict[str, Any]:
        seen.append((dict(ref), connection["provider"]))
        return {**ref, "id": "meta-" + ref["id"]} if "id" in ref else ref

    monkeypatch.setattr(media_ref, "resolve_media", resolve)
    company, connection = make_connection(db)
    document = stored(db, company, connection, {"document": {"id": "zq_1", "filename": "a.pdf"}})
    header = stored(db, company, connection, KINDS["buttons"])
    template = stored(db, company, connection, KINDS["template_media"])
    text = stored(db, company, connection, {"text": "plain"})
    # When they are sent
    enqueue(broker, [document, header, template, text])
    drain(broker, worker)
    # Then Meta received the resolved references: the document, the interactive header, the template header
    by_ref = {int(s["client_ref"]): s["payload"] for s in sends(fake_meta)}
    assert by_ref[document]["document"] == {"id": "meta-zq_1", "filename": "a.pdf"}
    assert by_ref[header]["interactive"]["header"]["image"] == {"id": "meta-2762702990552401"}
    assert by_ref[template]["template"]["components"][0]["parameters"][0]["document"]["link"] == "https://x.io/i.pdf"
    # And each reference went through the seam once with its connection; a text message never did
    assert sorted(ref.get("id") or ref["link"] for ref, _ in seen) == ["2762702990552401", "https://x.io/i.pdf", "zq_1"]
    assert {provider for _, provider in seen} == {"meta"}
    # And the stored payload keeps what the producer gave
    [row] = messages(db, [document])
    assert row.payload == {"document": {"id": "zq_1", "filename": "a.pdf"}}


def test_a_bridge_reaction_to_our_own_message_keys_it_from_me(
    db: Database, broker: Any, sender: Any, fake_evolution: str, worker: dramatiq.Worker
) -> None:
    company, connection = make_baileys_connection(db, fake_evolution)
    payload = {"reaction": {"message_id": "3EB0OURS", "emoji": "👍"}, "reaction_from_me": True}
    [message_id] = make_messages(db, company, connection, [TO], body="👍", type="reaction", payload=payload)
    enqueue(broker, [message_id])
    drain(broker, worker)
    [send] = kind_sends(fake_evolution)
    assert send["body"]["key"] == {"remoteJid": f"{TO}@s.whatsapp.net", "fromMe": True, "id": "3EB0OURS"}
