"""Wire formats of the fake Meta Graph API: error envelopes, payload checks, replies and status webhooks.

Shapes follow ``shared/docs/whatsapp-protocols.md`` sections A3 (webhooks) and B1-B4 (sending).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from tests.fakes import meta_kinds as kinds

MAX_TEXT_BODY = 4096
MAX_CALLBACK_DATA = 512

ERROR_TEXT: dict[int, str] = {
    0: "AuthException",
    1: "API Unknown",
    2: "API Service",
    4: "Application request limit reached",
    100: "Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    80007: "Rate limit issues",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131016: "Service unavailable",
    131026: "Message Undeliverable",
    131047: "Re-engagement message",
    131050: "User has stopped marketing messages",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131057: "Account in maintenance mode",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132015: "Template is Paused",
    132016: "Template is Disabled",
}

ERROR_DETAILS: dict[int, str] = {
    130429: "Cloud API message throughput has been reached.",
    131056: "Too many messages sent from the sender phone number to the same recipient phone number.",
}


def default_http_status(code: int) -> int:
    """The HTTP status the fake answers with for ``code`` (observed values, doc section B3)."""
    if code in (0, 190):
        return 401
    if code == 10 or 200 <= code <= 299 or code in (368, 131031):
        return 403
    if code in (1, 131000):
        return 500
    if code in (2, 131016):
        return 503
    return 400


def error_envelope(code: int, *, details: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A Graph API error body in the exact shape of doc section B3."""
    text = message or ERROR_TEXT.get(code, "Fake error")
    return {
        "error": {
            "message": f"(#{code}) {text}",
            "type": "OAuthException",
            "code": code,
            "error_data": {
                "messaging_product": "whatsapp",
                "details": details or ERROR_DETAILS.get(code, text),
            },
            "fbtrace_id": "A" + secrets.token_urlsafe(16),
        }
    }


def new_wamid() -> str:
    """A fresh wamid-looking id: ``wamid.`` + URL-safe random text."""
    return "wamid." + base64.urlsafe_b64encode(b"\x1c\x18\x0b" + secrets.token_bytes(27)).decode()


def _non_empty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def validate_payload(payload: object) -> str | None:
    """Why ``payload`` is not an acceptable text or template send, or ``None`` when it is."""
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    if payload.get("messaging_product") != "whatsapp":
        return "messaging_product must be 'whatsapp'"
    if payload.get("recipient_type", "individual") not in ("individual", "group"):
        return "recipient_type must be 'individual'"
    if not _non_empty_str(payload.get("to")):
        return "to is required"
    callback = payload.get("biz_opaque_callback_data")
    if callback is not None and (not isinstance(callback, str) or len(callback) > MAX_CALLBACK_DATA):
        return f"biz_opaque_callback_data must be a string of at most {MAX_CALLBACK_DATA} characters"
    context = payload.get("context")
    if context is not None and not (isinstance(context, dict) and _non_empty_str(context.get("message_id"))):
        return "context.message_id must be a wamid"
    kind = payload.get("type", "text")
    if kind == "text":
        text = payload.get("text")
        if not isinstance(text, dict):
            return "text is required"
        body = text.get("body")
        if not isinstance(body, str) or not body.strip():
            return "text.body is required"
        if len(body) > MAX_TEXT_BODY:
            return f"text.body is longer than {MAX_TEXT_BODY} characters"
        if not isinstance(text.get("preview_url", False), bool):
            return "text.preview_url must be a boolean"
        return None
    if kind == "template":
        template = payload.get("template")
        if not isinstance(template, dict) or not _non_empty_str(template.get("name")):
            return "template.name is required"
        language = template.get("language")
        if not isinstance(language, dict) or not _non_empty_str(language.get("code")):
            return "template.language.code is required"
        return kinds.validate_template_components(template.get("components", []))
    return kinds.validate_kind(kind, payload)


def success_body(to: str, wamid: str, *, template: bool) -> dict[str, Any]:
    """The 200 reply of doc section B2 (``message_status`` only for templates)."""
    message: dict[str, Any] = {"id": wamid}
    if template:
        message["message_status"] = "accepted"
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
        "messages": [message],
    }


def status_webhook(
    *,
    waba_id: str,
    display_phone_number: str,
    phone_number_id: str,
    wamid: str,
    recipient: str,
    status: str,
    timestamp: int,
    client_ref: str | None,
    failed_code: int = 131026,
) -> dict[str, Any]:
    """One status webhook in the shape of doc section A3 (pricing on ``delivered``, errors on ``failed``)."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": str(timestamp),
        "recipient_id": recipient.lstrip("+"),
    }
    if status == "delivered":
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "type": "regular", "category": "utility"}
    if status == "failed":
        title = ERROR_TEXT.get(failed_code, "Fake failure")
        item["errors"] = [
            {
                "code": failed_code,
                "title": title,
                "message": title,
                "error_data": {"details": ERROR_DETAILS.get(failed_code, title)},
                "href": "/documentation/business-messaging/whatsapp/support/error-codes",
            }
        ]
    if client_ref is not None:
        item["biz_opaque_callback_data"] = client_ref
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
        "statuses": [item],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}],
    }


def serialise(payload: dict[str, Any]) -> bytes:
    """The exact bytes Meta would send: ASCII-escaped, compact JSON."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def signature_header(body: bytes, app_secret: str) -> str:
    """``X-Hub-Signature-256`` value: ``sha256=`` + lowercase hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(app_secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
