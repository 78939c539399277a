"""Standard Webhooks signing of deliveries (the ``standardwebhooks`` package), and endpoint secrets.

Every delivery carries ``webhook-id`` (the event id: the same on every attempt, the receiver's idempotency
key), ``webhook-timestamp`` (unix seconds of *this* attempt) and ``webhook-signature`` (``v1,<base64
HMAC-SHA256>`` of ``{id}.{timestamp}.{body}``). After a secret rotation the previous secret keeps signing too
(space-separated second signature) until it expires, so receivers can switch over without losing events.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Iterable

import orjson
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
#: Random bytes in a new secret (the spec asks for 24 to 64).
SECRET_BYTES = 32
USER_AGENT = "zapq-webhooks/1"


def new_secret() -> str:
    """A fresh endpoint secret, ``whsec_`` + base64 of 32 random bytes (shown to the user once)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def body(event_type: str, occurred_at: dt.datetime, data: dict[str, object]) -> bytes:
    """The delivery body: ``{"type", "timestamp", "data"}`` (the bytes that are signed and sent)."""
    timestamp = occurred_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": event_type, "timestamp": timestamp, "data": data})


def headers(message_id: str, payload: bytes, signing_secrets: Iterable[str], *, now: dt.datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed with every secret in ``signing_secrets``."""
    signature = " ".join(Webhook(secret).sign(message_id, now, payload) for secret in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
