"""Webhook authentication: Meta's ``X-Hub-Signature-256`` HMAC and the Evolution API shared-secret header.

Meta signs the **exact raw body bytes** with HMAC-SHA256 keyed by the App Secret and sends
``X-Hub-Signature-256: sha256=<hex>``. Always verify over the bytes received, before any JSON parsing, and
never over re-serialised JSON (Meta escapes non-ASCII as ``\\uXXXX``; a re-dump would not match). The
Evolution API bridge sends no signature, so it is authenticated by a secret header configured on its webhook.

All comparisons are constant-time (:func:`hmac.compare_digest`). An empty configured secret never verifies
anything: a blank secret is a misconfiguration, and accepting it would let anyone forge requests.
"""

from __future__ import annotations

import hashlib
import hmac
import string

SIGNATURE_PREFIX = "sha256="
"""Scheme prefix of Meta's ``X-Hub-Signature-256`` header value."""

_HEX_DIGITS = frozenset(string.hexdigits.lower())
_SHA256_HEX_LEN = 64


def sign_meta(body: bytes, app_secret: str) -> str:
    """Return the ``X-Hub-Signature-256`` value Meta would send for ``body``: ``sha256=<lowercase hex>``."""
    digest = hmac.new(_utf8(app_secret), body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_meta_signature(body: bytes, header: str | None, app_secret: str) -> bool:
    """Return whether ``header`` is a valid ``X-Hub-Signature-256`` for ``body`` under ``app_secret``.

    Tolerates upper-case hex, an upper-case ``SHA256=`` scheme and surrounding whitespace. Returns ``False``
    (never raises) for a missing or malformed header and for an empty ``app_secret``.
    """
    if not isinstance(header, str) or not app_secret:
        return False
    value = header.strip()
    if value[: len(SIGNATURE_PREFIX)].lower() != SIGNATURE_PREFIX:
        return False
    given = value[len(SIGNATURE_PREFIX) :].lower()
    # Validate the shape first: compare_digest rejects non-ASCII str, and a short value is simply wrong.
    if len(given) != _SHA256_HEX_LEN or not _HEX_DIGITS.issuperset(given):
        return False
    expected = sign_meta(body, app_secret)[len(SIGNATURE_PREFIX) :]
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


def verify_shared_secret(given: str | None, expected: str) -> bool:
    """Return whether the secret header value ``given`` equals ``expected``, in constant time.

    ``False`` for a missing value and for an empty ``expected`` (an unset secret authenticates nobody).
    """
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(_utf8(given), _utf8(expected))


def _utf8(text: str) -> bytes:
    """Encode to UTF-8, letting lone surrogates through so that they compare unequal instead of raising."""
    return text.encode("utf-8", "surrogatepass")
