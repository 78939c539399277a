"""Credentials at rest: Fernet tokens under the keys of ``ZAPQ_SECRETS_KEYS`` (MultiFernet, newest first).

Every credential zapq keeps in Postgres — Meta access tokens, bridge API keys, the per-connection Baileys
webhook secrets — is stored as a Fernet token (AES-128-CBC + HMAC-SHA256, ``gAAAAA…``), so a database dump
alone reveals none of them. Values are encrypted with the first (newest) key and decrypted with whichever
key made them; ``zapq secrets rotate`` re-encrypts every stored credential under the newest key, after
which older keys can be dropped from the list.

Errors::

    SecretsError
    ├── SecretsKeyMissingError    no key is configured (ZAPQ_SECRETS_KEYS is empty)
    ├── InvalidSecretsKeyError    a configured key is not a Fernet key (32 url-safe base64 bytes)
    └── CannotDecryptError        a stored value was made by a key that is not (or no longer) configured,
                                  or it is not a Fernet token at all
"""

from __future__ import annotations

import secrets as _random
from collections.abc import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: The documented dev/test key (refused in ``prod``): ``base64url(b"zapq-dev-only-key-never-in-prod!")``.
DEV_SECRETS_KEY = "emFwcS1kZXYtb25seS1rZXktbmV2ZXItaW4tcHJvZCE="


class SecretsError(Exception):
    """Base of this module's errors."""


class SecretsKeyMissingError(SecretsError):
    """No key is configured, so nothing can be encrypted or decrypted."""


class InvalidSecretsKeyError(SecretsError, ValueError):
    """A configured key is not a Fernet key."""


class CannotDecryptError(SecretsError):
    """A stored value cannot be decrypted: the key that made it is missing from ``ZAPQ_SECRETS_KEYS``."""


def generate_key() -> str:
    """A new random key for ``ZAPQ_SECRETS_KEYS``."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(text: str) -> list[str]:
    """``"k1, k2"`` → ``["k1", "k2"]`` (newest first), each checked; :class:`InvalidSecretsKeyError` names
    the position of a bad one (never its value)."""
    keys = [entry.strip() for entry in text.split(",") if entry.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise InvalidSecretsKeyError(
                f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "make one with `zapq secrets new-key`)"
            ) from None
    return keys


class Secrets:
    """Encrypts and decrypts credentials with the configured keys (the first, newest one encrypts).

    Build one per process (building derives the keys) and pass it down.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        listed = tuple(keys)
        if not listed:
            raise SecretsKeyMissingError("ZAPQ_SECRETS_KEYS is not set: no key to encrypt credentials with")
        parse_keys(",".join(listed))
        self.keys = listed
        self._fernet = MultiFernet([Fernet(key) for key in listed])

    def __repr__(self) -> str:
        return f"Secrets({len(self.keys)} keys)"  # never the keys themselves

    def encrypt(self, value: str) -> str:
        """``value`` as a Fernet token under the newest key."""
        return self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def encrypt_optional(self, value: str | None) -> str | None:
        """:meth:`encrypt`, passing ``None`` through."""
        return None if value is None else self.encrypt(value)

    def decrypt(self, token: str) -> str:
        """The clear value of ``token``; :class:`CannotDecryptError` when no configured key made it."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise CannotDecryptError(
                "cannot decrypt a stored credential: the key it was encrypted with is missing from ZAPQ_SECRETS_KEYS"
            ) from None

    def decrypt_optional(self, token: str | None) -> str | None:
        """:meth:`decrypt`, passing ``None`` through."""
        return None if token is None else self.decrypt(token)

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted under the newest key (:class:`CannotDecryptError` as for :meth:`decrypt`)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise CannotDecryptError(
                "cannot re-encrypt a stored credential: the key it was encrypted with is missing from ZAPQ_SECRETS_KEYS"
            ) from None


def new_webhook_secret() -> str:
    """A fresh per-connection webhook secret (``whbs_`` + 32 random url-safe characters)."""
    return "whbs_" + _random.token_urlsafe(24)


def new_webhook_key() -> str:
    """A fresh public key naming a connection in its webhook URL (``/webhooks/baileys/{key}``)."""
    return _random.token_urlsafe(12)
