"""Helpers shared by the provider clients: JSON body decoding and network-error translation."""

from __future__ import annotations

import json
from typing import Any

import httpx

from libs.errors import ProviderError, ProviderTimeoutError, ProviderTransientError

MAX_DETAILS_CHARS = 300
"""Provider text copied into an exception is cut to this length (bodies can be whole HTML pages)."""


def json_object(body: bytes | str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Return ``body`` as a JSON object, or ``None`` when it is empty, not JSON or not an object."""
    if isinstance(body, dict):
        return body
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def excerpt(body: bytes | str | dict[str, Any] | None) -> str:
    """A short printable excerpt of a body for ``details`` (never used for classification)."""
    if body is None:
        return ""
    if isinstance(body, dict):
        text = json.dumps(body, ensure_ascii=False, default=str)
    elif isinstance(body, bytes):
        text = body.decode("utf-8", errors="replace")
    else:
        text = body
    return text[:MAX_DETAILS_CHARS]


#: Network failures that happen before a request is sent: the provider cannot have accepted it.
NOT_SENT: tuple[type[httpx.TransportError], ...] = (httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError)


def map_transport_error(exc: httpx.TransportError, *, provider: str) -> ProviderTransientError:
    """Translate an httpx network failure: timeouts to ``ProviderTimeoutError``, the rest to transient; each
    ``maybe_delivered`` unless it failed before the request was sent (:data:`NOT_SENT`).

    The caller raises the result ``from exc``. Only the exception's class name goes into the message: httpx
    messages never carry request headers, but we do not rely on that.
    """
    kind = type(exc).__name__
    maybe_delivered = not isinstance(exc, NOT_SENT)
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(
            f"{provider}: request timed out ({kind})", provider=provider, maybe_delivered=maybe_delivered
        )
    return ProviderTransientError(
        f"{provider}: network error ({kind})", provider=provider, details=str(exc), maybe_delivered=maybe_delivered
    )


def redact(error: ProviderError, secret: str) -> ProviderError:
    """Blank ``secret`` in ``error``'s message and details, should a server ever echo it back."""
    if secret in error.details:
        error.details = error.details.replace(secret, "[redacted]")
    if any(secret in str(arg) for arg in error.args):
        error.args = tuple(str(arg).replace(secret, "[redacted]") for arg in error.args)
    return error
