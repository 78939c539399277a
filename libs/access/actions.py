"""Creating, listing and revoking API keys (the API and the CLI), and checking a presented key (the API).

Checking is fast: a verified key is kept in this process for ``api_key_cache_seconds`` (5 by default), so a
revocation or expiry takes effect within that time on every API process. ``last_used_at`` is written at most
once a minute per key and process, never once per request.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy.orm import Session

from libs.access import store
from libs.access.keys import (
    BOOTSTRAP,
    InvalidKeyRequestError,
    KeyNotFoundError,
    Principal,
    check_scopes,
    generate,
    parse,
    secret_matches,
)
from libs.companies import store as companies
from libs.whatsapp.signature import verify_shared_secret

#: ``last_used_at`` is written at most this often per key (and process).
TOUCH_EVERY_S = 60.0
#: Cache entries kept at most (unknown key ids are cached too, so a flood of bad keys stays in memory, bounded).
MAX_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """What a new key is for."""

    company_id: int | None
    scopes: list[str]
    name: str = ""
    expires_at: dt.datetime | None = None


def _values(request: KeyRequest) -> tuple[dict[str, Any], str]:
    if request.expires_at is not None and request.expires_at <= dt.datetime.now(dt.UTC):
        raise InvalidKeyRequestError("expires_at is in the past")
    scopes = check_scopes(request.scopes, request.company_id)
    new = generate()
    values = {"key_id": new.key_id, "secret_hash": new.secret_hash, "company_id": request.company_id,
              "name": request.name, "scopes": scopes, "expires_at": request.expires_at}  # fmt: skip
    return values, new.token


async def create_key(conn: AsyncConnection[Any], request: KeyRequest) -> dict[str, Any]:
    """A new key: its row with ``key`` (the full text, shown this once)."""
    values, token = _values(request)
    if request.company_id is not None and not await companies.exists(conn, request.company_id):
        raise InvalidKeyRequestError(f"no company {request.company_id}")
    return {**await store.insert(conn, **values), "key": token}


def create_key_sync(session: Session, request: KeyRequest) -> dict[str, Any]:
    """:func:`create_key` for the CLI."""
    values, token = _values(request)
    if request.company_id is not None and not companies.exists_sync(session, request.company_id):
        raise InvalidKeyRequestError(f"no company {request.company_id}")
    return {**store.insert_sync(session, **values), "key": token}


async def revoke_key(conn: AsyncConnection[Any], key_id: str) -> dict[str, Any]:
    """Revoke a key (again: nothing changes); :class:`KeyNotFoundError`."""
    row = await store.revoke(conn, key_id)
    if row is None:
        raise KeyNotFoundError(f"no key {key_id}")
    return row


def revoke_key_sync(session: Session, key_id: str) -> dict[str, Any]:
    """:func:`revoke_key` for the CLI."""
    row = store.revoke_sync(session, key_id)
    if row is None:
        raise KeyNotFoundError(f"no key {key_id}")
    return row


@dataclass(slots=True)
class _Cached:
    until: float
    row: dict[str, Any] | None


class Verifier:
    """Turns an ``Authorization`` token into a :class:`Principal` (or ``None``): the bootstrap token, or a key."""

    def __init__(self, bootstrap_token: str, cache_seconds: float) -> None:
        self.bootstrap_token = bootstrap_token
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}
        self._touched: dict[str, float] = {}

    async def principal(self, token: str, pool: Any) -> Principal | None:
        """Who presents ``token``; ``None`` for anything unknown, wrong, revoked or expired."""
        if self.bootstrap_token and verify_shared_secret(token, self.bootstrap_token):
            return BOOTSTRAP
        parsed = parse(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or cached.until <= now:
            async with pool.connection() as conn:
                row = await store.for_verification(conn, key_id)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            cached = self._cache[key_id] = _Cached(now + self.cache_seconds, row)
        row = cached.row
        if row is None or row["revoked_at"] is not None or not secret_matches(secret, row["secret_hash"]):
            return None
        if row["expires_at"] is not None and row["expires_at"] <= dt.datetime.now(dt.UTC):
            return None
        if now - self._touched.get(key_id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            if len(self._touched) >= MAX_CACHED:
                self._touched.clear()
            self._touched[key_id] = now
            async with pool.connection() as conn:
                await store.touch(conn, key_id)
        return Principal(
            actor=f"key:{key_id}", company_id=row["company_id"], scopes=frozenset(row["scopes"]), key_id=key_id
        )
