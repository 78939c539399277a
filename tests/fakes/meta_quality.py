"""The fake Meta's phone-number fields and quality webhooks (issue 18, items 4-5; whatsapp-more.md §5).

* ``GET /{version}/{phone_number_id}?fields=…`` — the number's current fields, as the Graph API answers them:
  ``whatsapp_business_manager_messaging_limit`` (``TIER_250`` … ``TIER_UNLIMITED``; the deprecated
  ``messaging_limit_tier`` too), ``quality_rating`` (GREEN/YELLOW/RED/NA), ``throughput`` (``{"level": …}``),
  ``display_phone_number``, ``verified_name``, ``id``. Without ``fields``: Meta's default set. A field it does
  not know → 400, code 100; a bad token → 401, code 190.
* ``POST /_fake/quality`` ``{"phone_number_id", "event"?, "current_limit"?, "old_limit"?, "quality_rating"?,
  "throughput"?}`` — Meta changes the number: its fields are updated and a signed ``phone_number_quality_update``
  webhook is posted to ``webhook_url``; the answer carries zapq's HTTP status (``delivered``).
* ``POST /_fake/capability`` ``{"max_daily_conversations_per_business": 2000}`` — a
  ``business_capability_update`` for the WABA (the limit as an integer, as Meta sends it there).

The fake does not enforce the messaging limit: Meta documents no error code for it (its sends beyond the limit
are not refused with one), and the fake invents none.
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import meta_wire as wire
from tests.fakes.common import json_error

#: Meta's default fields of a phone number.
DEFAULT_FIELDS = ("id", "display_phone_number", "verified_name", "quality_rating")
KNOWN_FIELDS = frozenset(
    {
        *DEFAULT_FIELDS,
        "whatsapp_business_manager_messaging_limit",
        "messaging_limit_tier",
        "throughput",
        "name_status",
        "code_verification_status",
        "platform_type",
    }
)


def quality_webhook(*, waba_id: str, display_phone_number: str, **value: Any) -> dict[str, Any]:
    """A ``phone_number_quality_update`` webhook (only the given keys besides the number)."""
    change = {"display_phone_number": display_phone_number, **{k: v for k, v in value.items() if v is not None}}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "phone_number_quality_update", "value": change}]}],
    }


def capability_webhook(*, waba_id: str, max_daily_conversations_per_business: int) -> dict[str, Any]:
    """A ``business_capability_update`` webhook."""
    value = {
        "max_daily_conversation_per_phone": max_daily_conversations_per_business,
        "max_phone_numbers_per_business": 2,
        "max_daily_conversations_per_business": max_daily_conversations_per_business,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "business_capability_update", "value": value}]}],
    }


def _number(fake: Any, phone_number_id: str) -> dict[str, Any]:
    cfg = fake.config
    defaults = {
        "quality_rating": cfg.quality_rating,
        "whatsapp_business_manager_messaging_limit": cfg.messaging_limit_tier,
        "throughput": {"level": cfg.throughput_level},
    }
    return {**defaults, **fake.numbers.get(phone_number_id, {})}


def _authorised(fake: Any, request: Request) -> bool:
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return token in fake.config.valid_tokens


async def _post(fake: Any, payload: dict[str, Any]) -> int | None:
    cfg = fake.config
    if not cfg.webhook_url:
        return None
    body = wire.serialise(payload)
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": wire.signature_header(body, cfg.app_secret)}
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.post(cfg.webhook_url, content=body, headers=headers)
    return response.status_code


def routes(fake: Any) -> list[Route]:
    """The routes of this module for the fake Meta app (``fake``: its :class:`tests.fakes.meta.MetaFake`)."""

    async def fields(request: Request) -> Response:
        if not _authorised(fake, request):
            return json_error(401, wire.error_envelope(190))
        phone_number_id = request.path_params["phone_number_id"]
        asked = [f.strip() for f in request.query_params.get("fields", "").split(",") if f.strip()] or DEFAULT_FIELDS
        unknown = [f for f in asked if f not in KNOWN_FIELDS]
        if unknown:
            return json_error(
                400, wire.error_envelope(100, details=f"Tried accessing nonexisting field ({unknown[0]})")
            )
        number = _number(fake, phone_number_id)
        values = {
            "id": phone_number_id,
            "display_phone_number": fake.config.display_phone_number,
            "verified_name": "Fake Business",
            "messaging_limit_tier": number["whatsapp_business_manager_messaging_limit"],
            "name_status": "APPROVED",
            "code_verification_status": "VERIFIED",
            "platform_type": "CLOUD_API",
            **number,
        }
        return JSONResponse({name: values[name] for name in [*asked, "id"]})

    async def quality(request: Request) -> Response:
        body = await request.json()
        phone_number_id = str(body.pop("phone_number_id", ""))
        changed = fake.numbers.setdefault(phone_number_id, {})
        if body.get("quality_rating"):
            changed["quality_rating"] = body["quality_rating"]
        if body.get("current_limit"):
            changed["whatsapp_business_manager_messaging_limit"] = body["current_limit"]
        if body.get("throughput"):
            changed["throughput"] = {"level": body["throughput"]}
        payload = quality_webhook(
            waba_id=fake.config.waba_id, display_phone_number=fake.config.display_phone_number, **body
        )
        return JSONResponse({"delivered": await _post(fake, payload), "webhook": payload})

    async def capability(request: Request) -> Response:
        body = await request.json()
        limit = int(body["max_daily_conversations_per_business"])
        payload = capability_webhook(waba_id=fake.config.waba_id, max_daily_conversations_per_business=limit)
        return JSONResponse({"delivered": await _post(fake, payload), "webhook": payload})

    return [
        Route("/{version}/{phone_number_id}", fields, methods=["GET"]),
        Route("/_fake/quality", quality, methods=["POST"]),
        Route("/_fake/capability", capability, methods=["POST"]),
    ]
