"""Read a Meta number's current fields from the Graph API: its messaging-limit tier, quality rating and
throughput (``GET /{phone-number-id}?fields=…``, whatsapp-more.md §5).

Failures are translated in the one place the send path uses (:func:`libs.providers.meta.map_meta_error`,
:func:`libs.providers._http.map_transport_error`); the token is never in an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import orjson

from libs.errors import ProviderError
from libs.providers._http import map_transport_error, redact
from libs.providers.meta import PROVIDER, map_meta_error

#: ``whatsapp_business_manager_messaging_limit`` replaced ``messaging_limit_tier`` (deprecated); both are asked.
FIELDS = "whatsapp_business_manager_messaging_limit,quality_rating,throughput"


@dataclass(frozen=True, slots=True)
class NumberFields:
    """What Meta says of a number now (each ``None`` when not answered)."""

    messaging_tier: str | None
    quality_rating: str | None
    throughput_level: str | None


def _text(value: object) -> str | None:
    return value.strip()[:64] if isinstance(value, str) and value.strip() else None


def read_number_fields(
    http: httpx.Client, *, graph_url: str, api_version: str, phone_number_id: str, access_token: str
) -> NumberFields:
    """``GET /{api_version}/{phone_number_id}?fields=…``; raises the mapped ``libs.errors`` exception."""
    url = f"{graph_url.rstrip('/')}/{api_version}/{phone_number_id}"
    try:
        response = http.get(url, params={"fields": FIELDS}, headers={"Authorization": f"Bearer {access_token}"})
    except httpx.TransportError as exc:
        raise map_transport_error(exc, provider=PROVIDER) from exc
    if not response.is_success:
        raise redact(map_meta_error(response.status_code, response.content), access_token)
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"{PROVIDER}: the phone number's fields are not JSON", provider=PROVIDER) from exc
    if not isinstance(body, dict):
        raise ProviderError(f"{PROVIDER}: the phone number's fields are not an object", provider=PROVIDER)
    throughput = body.get("throughput")
    return NumberFields(
        messaging_tier=_text(body.get("whatsapp_business_manager_messaging_limit"))
        or _text(body.get("messaging_limit_tier")),
        quality_rating=_text(body.get("quality_rating")),
        throughput_level=_text(throughput.get("level")) if isinstance(throughput, dict) else None,
    )
