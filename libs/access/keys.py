"""API keys: ``zq_<key_id>_<secret>``, shown once, kept as the SHA-256 of the secret; scopes; who is calling.

A key with a ``company_id`` sees and changes only that company's data; a key without one (an operator's) sees
every company. ``ops:*`` and ``admin`` are scopes of keys without a company only: queue statistics, jobs and
dead letters are not kept per company, and ``admin`` manages keys for everyone. ``admin`` grants every scope.
The bootstrap token (``ZAPQ_API_TOKEN``) is an admin key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from libs.errors import RecordNotFoundError, ZapqError

#: Every scope a key may hold.
SCOPES: tuple[str, ...] = (
    "messages:read",
    "messages:write",
    "campaigns:read",
    "campaigns:write",
    "connections:read",
    "connections:write",
    "events:read",
    "events:write",
    "companies:read",
    "ops:read",
    "ops:write",
    "admin",
)
#: Scopes only a key without a company may hold (what they reach is not kept per company).
GLOBAL_ONLY_SCOPES = frozenset({"ops:read", "ops:write", "admin"})
#: Route requirements besides a scope: any valid key (``/openapi.json``, ``/api/me``), or no key at all.
AUTHENTICATED = "authenticated"
PUBLIC = "public"

PREFIX = "zq"
KEY_PATTERN = re.compile(r"^zq_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")
#: The actor recorded for the bootstrap token and for the command line.
BOOTSTRAP_ACTOR = "admin-token"
CLI_ACTOR = "cli"


class AccessError(ZapqError):
    """Base of the API-key errors."""


class InvalidKeyRequestError(AccessError):
    """A key cannot be created as asked (unknown scope, an ops or admin scope for a company key)."""


class KeyNotFoundError(AccessError, RecordNotFoundError):
    """No such key."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the audit actor, the company (``None``: every company) and the scopes."""

    actor: str
    company_id: int | None
    scopes: frozenset[str]
    key_id: str | None = None

    def allows(self, scope: str) -> bool:
        """Whether a route needing ``scope`` is open to this caller."""
        if scope in (AUTHENTICATED, PUBLIC):
            return True
        return "admin" in self.scopes or scope in self.scopes

    @property
    def is_global(self) -> bool:
        """A key for every company."""
        return self.company_id is None


BOOTSTRAP = Principal(actor=BOOTSTRAP_ACTOR, company_id=None, scopes=frozenset({"admin"}))


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the full text (shown once) and what is stored."""

    key_id: str
    token: str
    secret_hash: str


def generate() -> NewKey:
    """A fresh key: 64 bits of id, 256 bits of secret."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id=key_id, token=f"{PREFIX}_{key_id}_{secret}", secret_hash=hash_secret(secret))


def hash_secret(secret: str) -> str:
    """The stored form of a secret (SHA-256, hex): the secret has 256 bits of entropy, no salt or stretching needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``."""
    match = KEY_PATTERN.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def check_scopes(scopes: list[str], company_id: int | None) -> list[str]:
    """The scopes, validated and deduplicated; :class:`InvalidKeyRequestError` naming the problem."""
    if not scopes:
        raise InvalidKeyRequestError("a key needs at least one scope")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidKeyRequestError(f"unknown scope(s): {', '.join(unknown)} (known: {', '.join(SCOPES)})")
    if company_id is not None and (bad := sorted(set(scopes) & GLOBAL_ONLY_SCOPES)):
        raise InvalidKeyRequestError(f"{', '.join(bad)} cannot be given to a company key (they reach every company)")
    return [scope for scope in SCOPES if scope in scopes]
