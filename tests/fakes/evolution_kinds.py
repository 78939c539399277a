"""Every message kind on the fake Evolution bridge: the send endpoints besides ``sendText`` (checked against
Evolution 2.3.6's ``message.schema.ts``, ``whatsapp-more.md`` section 6) and ``messages.upsert`` builders.

Each endpoint answers 201 with a Baileys message like ``sendText``, records ``{endpoint, number, body, key_id}``
in ``fake.kind_sends`` (``GET /_fake/kind-sends``) and posts the same ``messages.update`` statuses as a text
send when ``webhook_url`` is set; a body missing a required field → 400 in Evolution's envelope (``instance
requires property "…"``).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from tests.fakes.evolution import EvolutionFake

#: Endpoint → its required properties (Evolution's JSON schemas) and the Baileys message type it answers.
ENDPOINTS: dict[str, tuple[tuple[str, ...], str]] = {
    "sendMedia": (("number", "mediatype", "media"), "imageMessage"),
    "sendWhatsAppAudio": (("number", "audio"), "audioMessage"),
    "sendSticker": (("number", "sticker"), "stickerMessage"),
    "sendLocation": (("number", "latitude", "longitude", "name", "address"), "locationMessage"),
    "sendContact": (("number", "contact"), "contactsArrayMessage"),
    "sendReaction": (("key", "reaction"), "reactionMessage"),
    "sendButtons": (("number", "title", "buttons"), "buttonsMessage"),
    "sendList": (("number", "title", "footerText", "buttonText", "sections"), "listMessage"),
}
MEDIATYPES = ("image", "video", "audio", "document")


def _problem(endpoint: str, body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be an object"
    required, _ = ENDPOINTS[endpoint]
    for name in required:
        if name not in body or body[name] is None:
            return f'instance requires property "{name}"'
    if endpoint == "sendMedia" and body["mediatype"] not in MEDIATYPES:
        return "mediatype must be one of image, video, audio, document"
    if endpoint == "sendMedia" and str(body["media"]).startswith("data:"):
        return "media must be a URL or raw base64 (no data: prefix)"
    if endpoint == "sendContact" and not all(c.get("fullName") and c.get("phoneNumber") for c in body["contact"]):
        return 'contact requires property "fullName" and "phoneNumber"'
    if endpoint == "sendReaction":
        key = body["key"]
        if not (
            isinstance(key, dict) and key.get("id") and key.get("remoteJid") and isinstance(key.get("fromMe"), bool)
        ):
            return "key requires remoteJid, fromMe and id"
    if endpoint == "sendButtons":
        buttons = body["buttons"]
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return "buttons must hold 1 to 3 buttons"
        if len({b.get("type") for b in buttons}) != 1:
            return "buttons of different types cannot be mixed"
    return None


async def send_kind(fake: EvolutionFake, request: Request) -> Response:
    """``POST /message/{endpoint}/{instance}`` for every endpoint of :data:`ENDPOINTS`."""
    from tests.fakes.evolution import EvolutionSend, envelope, jid

    endpoint = request.path_params["endpoint"]
    if endpoint not in ENDPOINTS:
        return JSONResponse(envelope(404, [f"Cannot POST /message/{endpoint}"]), status_code=404)
    instance, early = await fake.gate(request)
    if early is not None:
        return early
    try:
        body = json.loads(await request.body())
    except ValueError:
        return JSONResponse(envelope(400, ["Unexpected token in JSON"]), status_code=400)
    if problem := _problem(endpoint, body):
        return JSONResponse(envelope(400, [problem]), status_code=400)
    if fake.config.instances[instance] != "open":
        return JSONResponse(envelope(400, ["Error: Connection Closed"]), status_code=400)
    number = str(body.get("number") or body["key"]["remoteJid"].split("@", 1)[0]).lstrip("+")
    key_id = "3EB0" + secrets.token_hex(9).upper()
    fake.kind_sends.append(
        {"endpoint": endpoint, "instance": instance, "number": number, "body": body, "key_id": key_id}
    )
    instance_id = fake.instance_ids.setdefault(instance, secrets.token_hex(8))
    if fake.config.webhook_url:  # the same messages.update statuses as a text send
        status_of = EvolutionSend(instance, number, "", key_id, None, time.time())
        fake._schedule_webhooks(status_of, instance_id, fake.config.webhook_url, str(request.base_url))
    message_type = ENDPOINTS[endpoint][1]
    if endpoint == "sendMedia":
        message_type = f"{body['mediatype']}Message"
    answer = {
        "key": {"remoteJid": jid(number), "fromMe": True, "id": key_id},
        "pushName": "Você",
        "status": "PENDING",
        "message": {message_type: {}},
        "messageType": message_type,
        "messageTimestamp": int(time.time()),
        "instanceId": instance_id,
        "source": "unknown",
    }
    return JSONResponse(answer, status_code=201)


def routes(fake: EvolutionFake) -> list[Route]:
    """The kind endpoints and ``GET /_fake/kind-sends``."""

    async def send(request: Request) -> Response:
        return await send_kind(fake, request)

    async def listed(request: Request) -> Response:
        return JSONResponse({"sends": fake.kind_sends})

    return [
        Route("/message/{endpoint}/{instance}", send, methods=["POST"]),
        Route("/_fake/kind-sends", listed, methods=["GET"]),
    ]


# -- inbound (messages.upsert) ----------------------------------------------------------------------------


def upsert(message: dict[str, Any], message_type: str, *, key_id: str, number: str, instance: str = "main",
           context: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A ``messages.upsert`` webhook of one inbound message (``message``: the Baileys message object)."""
    data: dict[str, Any] = {
        "key": {"remoteJid": f"{number}@s.whatsapp.net", "fromMe": False, "id": key_id},
        "pushName": "Ana",
        "status": "DELIVERY_ACK",
        "message": message,
        "messageType": message_type,
        "messageTimestamp": 1749416383,
        "instanceId": "00000000-0000-0000-0000-000000000000",
        "source": "android",
    }
    if context is not None:
        data["contextInfo"] = context
    return {"event": "messages.upsert", "instance": instance, "data": data, "destination": "http://x",
            "date_time": "2025-10-21T11:40:39.000Z", "sender": "5511888888888@s.whatsapp.net",
            "server_url": "http://bridge", "apikey": None}  # fmt: skip


#: A Baileys message object and its messageType, per inbound kind.
BAILEYS_MESSAGES: dict[str, tuple[dict[str, Any], str]] = {
    "image": ({"imageMessage": {"url": "https://mmg.whatsapp.net/x", "mimetype": "image/jpeg", "caption": "look",
                                "fileSha256": "c2hh", "fileLength": "1234"}}, "imageMessage"),
    "video": ({"videoMessage": {"mimetype": "video/mp4", "caption": "clip", "seconds": 3}}, "videoMessage"),
    "audio": ({"audioMessage": {"mimetype": "audio/ogg; codecs=opus", "ptt": True, "seconds": 4}}, "audioMessage"),
    "document": ({"documentWithCaptionMessage": {"message": {"documentMessage": {
        "mimetype": "application/pdf", "fileName": "inv.pdf", "caption": "invoice"}}}}, "documentWithCaptionMessage"),
    "sticker": ({"stickerMessage": {"mimetype": "image/webp", "isAnimated": False}}, "stickerMessage"),
    "location": ({"locationMessage": {"degreesLatitude": -23.55, "degreesLongitude": -46.63, "name": "Sé",
                                      "address": "Praça da Sé"}}, "locationMessage"),
    "contacts": ({"contactMessage": {"displayName": "John Smith",
                                     "vcard": "BEGIN:VCARD\nVERSION:3.0\nFN:John Smith\n"
                                              "TEL;type=CELL;waid=16505551234:+1 650 555 1234\nEND:VCARD"}},
                 "contactMessage"),
    "button_reply": ({"buttonsResponseMessage": {"selectedButtonId": "yes", "selectedDisplayText": "Yes"}},
                     "buttonsResponseMessage"),
    "list_reply": ({"listResponseMessage": {"title": "Express", "description": "1 day",
                                            "singleSelectReply": {"selectedRowId": "priority_express"}}},
                   "listResponseMessage"),
    "template_button": ({"templateButtonReplyMessage": {"selectedId": "STOP", "selectedDisplayText": "Stop"}},
                        "templateButtonReplyMessage"),
}  # fmt: skip
