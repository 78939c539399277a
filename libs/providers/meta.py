"""Meta WhatsApp Cloud API client and the one function that maps Meta errors onto ``libs.errors``.

Classification is by Meta ``error.code`` (protocol doc, section B4), falling back to the HTTP status only when
the body carries no code::

    code                                   exception                       handling
    130429                                 ProviderRateLimited (1 s)       deferred, no attempt used
    4, 80007                               ProviderRateLimited (60 s)      deferred, no attempt used
    131056                                 PairRateLimited (4**X s)        deferred, no attempt used
    1, 2, 131000, 131016, 131057, 133004   ProviderTransientError          retried (queue policy)
    131026, 131047, 131050                 InvalidRecipientError           message failed with its reason
    132000 - 132016                        TemplateError                   message failed with its reason
    131049, 470 - 479                      RuleRefusedError                message failed with its reason
    0, 190, 10, 200-299, 131005, 133010,
    368, 131031                            ConnectionNeedsAttentionError   dead-lettered, fix connection
    100, 131008, 131009, 131048,
    131051, other codes with HTTP 4xx      ProviderPermanentError          dead-lettered

A ``RuleRefusedError`` carries its rule as ``reason`` (:func:`libs.rules.reasons.rule_reason`): the sender
fails the message with it and finishes the job (no dead letter, no Sentry event, no alert).
    other codes with HTTP 5xx              ProviderTransientError          retried (queue policy)
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from libs.errors import (
    ConnectionNeedsAttentionError,
    InvalidRecipientError,
    PairRateLimited,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderTransientError,
    RuleRefusedError,
    TemplateError,
)
from libs.providers._http import excerpt, json_object, map_transport_error, redact
from libs.providers.base import OutboundMessage, OutboundTemplate, OutboundText, SendResult
from libs.rules.reasons import rule_reason

PROVIDER = "meta"

THROUGHPUT_DELAY_MS = 1_000
"""Deferral after 130429 (per-number throughput): the window is one second."""
APP_LIMIT_DELAY_MS = 60_000
"""Deferral after 4 (app call limit) and 80007 (WABA limit): these windows are counted over an hour."""
PAIR_LIMIT_BASE_S = 4
"""After 131056 wait ``4 ** pair_hits`` seconds (Meta: 4^X s, X = 0, 1, 2, …)."""
MAX_PAIR_HITS = 8
"""``pair_hits`` is clamped to this, so the pair-limit deferral never exceeds 4**8 s (about 18 h)."""

#: Meta ``error.code`` → the exception it maps to (the module docstring's table).
ERROR_CLASSES: dict[int, type[ProviderError]] = {
    130429: ProviderRateLimited,
    4: ProviderRateLimited,
    80007: ProviderRateLimited,
    131056: PairRateLimited,
    **dict.fromkeys((1, 2, 131000, 131016, 131057, 133004), ProviderTransientError),
    **dict.fromkeys((131026, 131047, 131050), InvalidRecipientError),
    **dict.fromkeys((0, 190, 10, 131005, 133010, 368, 131031), ConnectionNeedsAttentionError),
    131049: RuleRefusedError,
    **dict.fromkeys((100, 131008, 131009, 131048, 131051), ProviderPermanentError),
}
#: Ranges of codes, for a code not in :data:`ERROR_CLASSES`.
ERROR_RANGES: tuple[tuple[range, type[ProviderError]], ...] = (
    (range(132000, 132017), TemplateError),
    (range(200, 300), ConnectionNeedsAttentionError),
    (range(470, 480), RuleRefusedError),
)
#: Deferral of each rate-limit code (131056's grows with the pair's refusals: :func:`pair_limit_delay_ms`).
RATE_LIMIT_DELAYS_MS: dict[int, int] = {
    130429: THROUGHPUT_DELAY_MS,
    4: APP_LIMIT_DELAY_MS,
    80007: APP_LIMIT_DELAY_MS,
}

#: HTTP statuses from this one up.
_AND_ABOVE = 2**31
#: A code in neither table: by HTTP status (first match), else ``ProviderTransientError`` (nothing says retrying
#: is futile).
UNKNOWN_CODE_BY_STATUS: tuple[tuple[range, type[ProviderError]], ...] = (
    (range(500, _AND_ABOVE), ProviderTransientError),
    (range(429, 430), ProviderRateLimited),
    (range(400, 500), ProviderPermanentError),
)
#: A body without a Meta error code: by HTTP status (first match), else ``ProviderTransientError``.
NO_CODE_BY_STATUS: tuple[tuple[range, type[ProviderError]], ...] = (
    (range(401, 402), ConnectionNeedsAttentionError),
    (range(429, 430), ProviderRateLimited),
    (range(408, 409), ProviderTransientError),
    (range(500, _AND_ABOVE), ProviderTransientError),
    (range(400, 500), ProviderPermanentError),
)

_API_VERSION = re.compile(r"^v\d+\.\d+$")


def pair_limit_delay_ms(pair_hits: int) -> int:
    """Milliseconds to wait after the ``pair_hits``-th consecutive 131056 for one recipient (0-based)."""
    return PAIR_LIMIT_BASE_S ** min(max(pair_hits, 0), MAX_PAIR_HITS) * 1000


def _error_code(error: dict[str, Any]) -> int | None:
    code = error.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code)
    return None


def map_meta_error(http_status: int, body: bytes | dict[str, Any] | None, *, pair_hits: int = 0) -> ProviderError:
    """Translate a failed Graph API response into the ``libs.errors`` exception to raise.

    ``body`` is the raw response body or its parsed JSON; ``pair_hits`` is how many 131056 replies this
    recipient has already produced in a row (it sets the 4**X back-off). The returned exception carries
    ``code``, ``http_status`` and ``error_data.details``; the caller raises it.
    """
    envelope = json_object(body)
    error = envelope.get("error") if envelope else None
    code = _error_code(error) if isinstance(error, dict) else None
    if not isinstance(error, dict) or code is None:
        return _by_status(http_status, body)

    error_data = error.get("error_data")
    details = error_data.get("details") if isinstance(error_data, dict) else None
    text = error.get("message")
    message = f"meta error {code} (HTTP {http_status})"
    if isinstance(text, str) and text:
        message = f"{message}: {text[:200]}"
    common: dict[str, Any] = {
        "provider": PROVIDER,
        "code": code,
        "http_status": http_status,
        "details": details if isinstance(details, str) else "",
    }

    rule = error_class(code) or _first_match(UNKNOWN_CODE_BY_STATUS, http_status)
    return _build(rule, message, common, code=code, pair_hits=pair_hits)


def error_class(code: int) -> type[ProviderError] | None:
    """The exception Meta ``error.code`` ``code`` maps to, or ``None`` for a code zapq does not know."""
    known = ERROR_CLASSES.get(code)
    return known if known is not None else _first_match(ERROR_RANGES, code)


def _first_match(rules: tuple[tuple[range, type[ProviderError]], ...], value: int) -> type[ProviderError] | None:
    return next((cls for values, cls in rules if value in values), None)


def _build(
    cls: type[ProviderError] | None,
    message: str,
    common: dict[str, Any],
    *,
    code: int | None = None,
    pair_hits: int = 0,
) -> ProviderError:
    """An instance of ``cls`` (``ProviderTransientError`` when none) with its deferral when it is a rate limit."""
    if cls is PairRateLimited:
        return PairRateLimited(message, delay_ms=pair_limit_delay_ms(pair_hits), **common)
    if cls is ProviderRateLimited:
        delay_ms = RATE_LIMIT_DELAYS_MS.get(code, THROUGHPUT_DELAY_MS) if code is not None else THROUGHPUT_DELAY_MS
        return ProviderRateLimited(message, delay_ms=delay_ms, **common)
    if cls is not None and issubclass(cls, RuleRefusedError):
        return cls(message, reason=rule_reason(code), **common)
    return (cls or ProviderTransientError)(message, **common)


def _by_status(http_status: int, body: bytes | dict[str, Any] | None) -> ProviderError:
    """Classify a response whose body has no Meta error code."""
    message = f"meta HTTP {http_status} without an error code"
    common: dict[str, Any] = {"provider": PROVIDER, "http_status": http_status, "details": excerpt(body)}
    return _build(_first_match(NO_CODE_BY_STATUS, http_status), message, common)


def build_payload(message: OutboundMessage) -> dict[str, Any]:
    """The JSON body of ``POST /{version}/{phone_number_id}/messages`` for ``message`` (doc section B1; other
    kinds: ``whatsapp-more.md`` section 1 — the content goes under the kind's name as it is)."""
    payload: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to,
    }
    if isinstance(message, OutboundText):
        payload["type"] = "text"
        payload["text"] = {"preview_url": False, "body": message.body}
        if message.reply_to:
            payload["context"] = {"message_id": message.reply_to}
    elif isinstance(message, OutboundTemplate):
        payload["type"] = "template"
        template: dict[str, Any] = {"name": message.name, "language": {"code": message.language}}
        if message.components:
            template["components"] = list(message.components)
        payload["template"] = template
    else:
        payload["type"] = message.kind
        payload[message.kind] = message.content
    if not isinstance(message, OutboundText) and message.reply_to:
        payload["context"] = {"message_id": message.reply_to}
    if message.client_ref:
        payload["biz_opaque_callback_data"] = message.client_ref
    return payload


def parse_send_response(body: bytes) -> SendResult:
    """Read the wamid (``messages[0].id``), ``contacts[0].wa_id`` and ``message_status`` of a 200 reply.

    A 200 without a wamid is raised as ``ProviderPermanentError``: the message may have gone out, and a
    retry could deliver it twice.
    """
    envelope = json_object(body) or {}
    messages = envelope.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(wamid, str) or not wamid:
        raise ProviderPermanentError(
            "meta accepted the request but returned no message id",
            provider=PROVIDER,
            http_status=200,
            details=excerpt(body),
        )
    contacts = envelope.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts else None
    wa_id = contact.get("wa_id") if isinstance(contact, dict) else None
    status = first.get("message_status") if isinstance(first, dict) else None
    return SendResult(
        external_id=wamid,
        wa_id=wa_id if isinstance(wa_id, str) else None,
        provider_status=status if isinstance(status, str) else None,
    )


class MetaCloudClient:
    """Sends messages through the Meta WhatsApp Cloud API for one business phone number.

    The ``httpx.AsyncClient`` (with its timeouts and pool limits) is owned by the caller; this class only
    builds requests and maps replies. The access token is kept out of ``repr`` and of every exception.
    """

    name: str = PROVIDER

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        graph_url: str,
        api_version: str,
        phone_number_id: str,
        access_token: str,
    ) -> None:
        if not _API_VERSION.match(api_version):
            raise ValueError(f"api_version must look like 'v21.0', got {api_version!r}")
        if not phone_number_id:
            raise ValueError("phone_number_id must not be empty")
        if not access_token:
            raise ValueError("access_token must not be empty")
        self._http = http
        self._access_token = access_token
        self.phone_number_id = phone_number_id
        self.url = f"{graph_url.rstrip('/')}/{api_version}/{phone_number_id}/messages"
        self._endpoint = httpx.URL(self.url)  # parsed once: a client lives as long as its connection's settings
        self._headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}

    def __repr__(self) -> str:
        return f"MetaCloudClient(url={self.url!r})"

    async def send(self, message: OutboundMessage, *, pair_hits: int = 0) -> SendResult:
        """POST ``message`` once; return its wamid or raise the mapped ``libs.errors`` exception.

        ``pair_hits`` is the number of 131056 replies already seen in a row for this recipient; it only
        matters if this call is refused for the pair limit (delay ``4 ** pair_hits`` s).
        """
        try:
            body = orjson.dumps(build_payload(message))
            response = await self._http.post(self._endpoint, content=body, headers=self._headers)
        except httpx.TransportError as exc:
            raise map_transport_error(exc, provider=PROVIDER) from exc
        if not response.is_success:
            error = map_meta_error(response.status_code, response.content, pair_hits=pair_hits)
            raise redact(error, self._access_token)
        return parse_send_response(response.content)
