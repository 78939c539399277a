"""Client for a Baileys bridge speaking the Evolution API v2, and its one error-mapping function.

Mapping (protocol doc, section C)::

    HTTP status                          exception
    401, 403 (bad apikey)                ConnectionNeedsAttentionError
    404 (unknown instance)               ConnectionNeedsAttentionError
    400 with {exists: false} objects     InvalidRecipientError
    400 "Connection Closed"              ConnectionClosed (the WhatsApp session dropped: hold, do not fail)
    other 400 / 4xx                      ProviderPermanentError
    429                                  ProviderRateLimited (1 s)
    408, 5xx, anything else              ProviderTransientError
    network errors                       ProviderTimeoutError / ProviderTransientError
"""

from __future__ import annotations

from typing import Any

import httpx

from libs.errors import (
    ConnectionClosed,
    ConnectionNeedsAttentionError,
    InvalidRecipientError,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderTransientError,
)
from libs.providers._http import excerpt, json_object, map_transport_error, redact
from libs.providers.baileys_kinds import bridge_request
from libs.providers.base import OutboundMessage, OutboundTemplate, OutboundText, SendResult

PROVIDER = "baileys"

RATE_LIMIT_DELAY_MS = 1_000
"""Deferral after a 429 (not sent by Evolution itself, but by proxies in front of it)."""


def _messages(envelope: dict[str, Any] | None) -> list[Any]:
    """The items of ``response.message`` (a list, a single object or a string in Evolution's envelopes)."""
    if envelope is None:
        return []
    response = envelope.get("response")
    message = response.get("message") if isinstance(response, dict) else None
    if message is None:
        return []
    return message if isinstance(message, list) else [message]


#: Evolution's whole message (``response.message`` item) when the instance's WhatsApp session is not open;
#: compared case-insensitively after an optional ``Error:`` prefix. The bridge has no code for it.
CONNECTION_CLOSED = "connection closed"


def _connection_closed(items: list[Any]) -> bool:
    """True when an item of ``response.message`` is Evolution's "Connection Closed" (exactly, not a substring)."""
    for item in items:
        if isinstance(item, str):
            text = item.strip().lower()
            text = text[len("error:") :].strip() if text.startswith("error:") else text
            if text == CONNECTION_CLOSED:
                return True
    return False


def _not_on_whatsapp(items: list[Any]) -> list[dict[str, Any]]:
    """The ``{jid, exists: false, number}`` objects among ``items``."""
    return [item for item in items if isinstance(item, dict) and item.get("exists") is False]


def map_bridge_error(http_status: int, body: bytes | dict[str, Any] | None) -> ProviderError:
    """Translate a failed Evolution API response into the ``libs.errors`` exception to raise.

    Only the status code and the structure of ``response.message`` are used: a 400 whose message holds an
    object with ``exists: false`` is an invalid recipient, one whose message is exactly "Connection Closed" a
    closed session (the bridge has no code for it), any other 400 a permanent refusal.
    """
    items = _messages(json_object(body))
    texts = [item if isinstance(item, str) else excerpt(item) for item in items]
    message = f"baileys bridge HTTP {http_status}"
    if texts:
        message = f"{message}: {'; '.join(texts)[:200]}"
    common: dict[str, Any] = {"provider": PROVIDER, "http_status": http_status, "details": excerpt(body)}

    if http_status in (401, 403, 404):
        return ConnectionNeedsAttentionError(message, **common)
    if http_status == 400 and (missing := _not_on_whatsapp(items)):
        numbers = ", ".join(str(item.get("number") or item.get("jid")) for item in missing)
        return InvalidRecipientError(f"not on WhatsApp: {numbers}", **common)
    if http_status == 400 and _connection_closed(items):
        return ConnectionClosed(message, **common)
    if http_status == 429:
        return ProviderRateLimited(message, delay_ms=RATE_LIMIT_DELAY_MS, **common)
    if http_status == 408 or http_status >= 500:
        return ProviderTransientError(message, **common)
    if 400 <= http_status < 500:
        return ProviderPermanentError(message, **common)
    return ProviderTransientError(message, **common)


def build_send_text(message: OutboundText) -> dict[str, Any]:
    """The JSON body of ``POST /message/sendText/{instance}``; a reply quotes the original by its key id."""
    payload: dict[str, Any] = {"number": message.to.lstrip("+"), "text": message.body}
    if message.reply_to:
        payload["quoted"] = {"key": {"id": message.reply_to}}
    return payload


def parse_send_response(body: bytes) -> SendResult:
    """Read ``key.id`` (external id), the recipient from ``key.remoteJid`` and ``status`` of a 2xx reply.

    A 2xx without ``key.id`` is raised as ``ProviderPermanentError``: the message may have gone out, and a
    retry could deliver it twice.
    """
    envelope = json_object(body) or {}
    key = envelope.get("key")
    key_id = key.get("id") if isinstance(key, dict) else None
    if not isinstance(key_id, str) or not key_id:
        raise ProviderPermanentError(
            "baileys bridge accepted the request but returned no key.id",
            provider=PROVIDER,
            details=excerpt(body),
        )
    remote_jid = key.get("remoteJid") if isinstance(key, dict) else None
    status = envelope.get("status")
    return SendResult(
        external_id=key_id,
        wa_id=remote_jid.split("@", 1)[0] if isinstance(remote_jid, str) and remote_jid else None,
        provider_status=status if isinstance(status, str) else None,
    )


class BaileysBridgeClient:
    """Sends messages through one instance of an Evolution API v2 (Baileys) bridge.

    Templates do not exist on the unofficial WhatsApp Web protocol and are refused with
    ``ProviderPermanentError`` before any request. The API key is kept out of ``repr`` and of exceptions.
    """

    name: str = PROVIDER

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, instance: str, api_key: str) -> None:
        if not instance:
            raise ValueError("instance must not be empty")
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._http = http
        self._api_key = api_key
        self.instance = instance
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"BaileysBridgeClient(base_url={self.base_url!r}, instance={self.instance!r})"

    async def send(self, message: OutboundMessage, *, pair_hits: int = 0) -> SendResult:
        """POST a message once (text to ``sendText``, other kinds to their endpoint:
        :mod:`libs.providers.baileys_kinds`); return its ``key.id`` or raise the mapped ``libs.errors`` exception.

        ``pair_hits`` is ignored: the bridge has no per-recipient limit.
        """
        if isinstance(message, OutboundTemplate):
            raise ProviderPermanentError("template messages are not supported by the Baileys bridge", provider=PROVIDER)
        if isinstance(message, OutboundText):
            endpoint, payload = "sendText", build_send_text(message)
        else:
            endpoint, payload = bridge_request(message)
        response = await self._request("POST", f"/message/{endpoint}/{self.instance}", payload)
        return parse_send_response(response.content)

    async def connection_state(self) -> str:
        """The instance's WhatsApp connection state: ``open``, ``connecting`` or ``close``."""
        response = await self._request("GET", f"/instance/connectionState/{self.instance}")
        envelope = json_object(response.content) or {}
        instance = envelope.get("instance")
        state = instance.get("state") if isinstance(instance, dict) else None
        if not isinstance(state, str):
            raise ProviderTransientError(
                "baileys bridge returned no connection state",
                provider=PROVIDER,
                http_status=response.status_code,
                details=excerpt(response.content),
            )
        return state

    async def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> httpx.Response:
        """One request with the ``apikey`` header; non-2xx replies and network errors are raised mapped."""
        try:
            response = await self._http.request(
                method, f"{self.base_url}{path}", json=payload, headers={"apikey": self._api_key}
            )
        except httpx.TransportError as exc:
            raise map_transport_error(exc, provider=PROVIDER) from exc
        if not response.is_success:
            raise redact(map_bridge_error(response.status_code, response.content), self._api_key)
        return response
