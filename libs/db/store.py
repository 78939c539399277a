"""SQL that concerns the database itself rather than an aggregate."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

PING = "SELECT 1"


async def ping(conn: AsyncConnection[Any]) -> None:
    """One round trip (readiness probes)."""
    await conn.execute(PING)
