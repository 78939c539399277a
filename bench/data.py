"""Rows the scenarios need, inserted in bulk (``INSERT … SELECT generate_series``), and bulk enqueues."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
import redis
from dramatiq import Message

from libs.enqueue import enqueue_many
from libs.secrets import DEV_SECRETS_KEY, Secrets
from tests.fakes.meta import DEFAULT_TOKEN

Conn = psycopg.Connection[tuple[Any, ...]]

#: Meta access token of every bench connection (the fake accepts it).
TOKEN = DEFAULT_TOKEN
#: ``TOKEN`` as stored (encrypted at rest under the dev/test key the bench processes run with).
STORED_TOKEN = Secrets([DEV_SECRETS_KEY]).encrypt(TOKEN)
#: Messages per ``enqueue_many`` call when a scenario loads a queue.
ENQUEUE_CHUNK = 5_000


def make_company(conn: Conn, name: str = "bench") -> int:
    """A company; returns its id."""
    row = conn.execute("INSERT INTO companies (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def make_connections(conn: Conn, company_id: int, count: int, *, prefix: str, rate: int = 80) -> list[tuple[int, str]]:
    """``count`` active Meta connections with phone number ids ``<prefix>000001``…; returns (id, pnid)."""
    rows = conn.execute(
        """
        INSERT INTO connections
          (company_id, name, provider, status, phone_number_id, access_token, rate_per_second, service_window)
        SELECT %(company)s, 'bench-' || g, 'meta', 'active', %(prefix)s || lpad(g::text, 6, '0'), %(token)s, %(rate)s,
               'off'  -- load tests send free-form text to numbers that never wrote
        FROM generate_series(1, %(count)s) AS g
        ORDER BY g
        RETURNING id, phone_number_id
        """,
        {"company": company_id, "prefix": prefix, "token": STORED_TOKEN, "rate": rate, "count": count},
    ).fetchall()
    return sorted((int(r[0]), str(r[1])) for r in rows)


def make_messages(
    conn: Conn,
    company_id: int,
    connection_ids: Sequence[int],
    count: int,
    *,
    priority: str,
    recipient_offset: int,
) -> list[int]:
    """``count`` queued outbound text messages spread round-robin over the connections; returns their ids.

    Every message has its own recipient (``recipient_offset`` keeps phases apart), so the per-recipient pair
    limit never applies.
    """
    row = conn.execute(
        """
        WITH ins AS (
            INSERT INTO messages (company_id, connection_id, direction, priority, status, recipient, type, body)
            SELECT %(company)s, (%(conns)s::bigint[])[1 + (g %% %(n)s)], 'out', %(priority)s, 'queued',
                   '+55' || (11000000000 + %(offset)s + g)::text, 'text', 'bench message ' || g
            FROM generate_series(1, %(count)s) AS g
            RETURNING id
        )
        SELECT array_agg(id ORDER BY id) FROM ins
        """,
        {
            "company": company_id,
            "conns": list(connection_ids),
            "n": len(connection_ids),
            "priority": priority,
            "offset": recipient_offset,
            "count": count,
        },
    ).fetchone()
    return [int(i) for i in (row[0] if row and row[0] else [])]


def enqueue_chunked(
    client: redis.Redis, namespace: str, messages: Iterable[Message[Any]], chunk: int = ENQUEUE_CHUNK
) -> int:
    """:func:`libs.enqueue.enqueue_many` in chunks; returns how many were enqueued."""
    total = 0
    batch: list[Message[Any]] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= chunk:
            total += enqueue_many(client, namespace, batch)
            batch = []
    if batch:
        total += enqueue_many(client, namespace, batch)
    return total


def status_counts(conn: Conn, ids: Sequence[int]) -> dict[str, int]:
    """Messages per status among ``ids``."""
    rows = conn.execute(
        "SELECT status, count(*) FROM messages WHERE id = ANY(%s) GROUP BY status", (list(ids),)
    ).fetchall()
    return {str(status): int(count) for status, count in rows}
