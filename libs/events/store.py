"""All SQL of events, endpoints and deliveries (psycopg ``%(name)s`` parameters, sync and async callers).

Delivery states::

    waiting ──(head of its conversation)──▶ pending ──claim──▶ delivering ──2xx──▶ delivered
       ▲                                      ▲                    │
       └── replay / recover                   └── failed attempt ──┤ (next attempt on the schedule)
                                                                   └── schedule exhausted ──▶ failed (dead letter)

Ordering per (endpoint, conversation): at most one delivery of a conversation is ``pending`` or
``delivering``; the others wait. When the head ends (delivered, or given up), the next one is promoted. Both
the publisher (adding deliveries) and the dispatcher (ending them) take a transaction-scoped advisory lock per
(endpoint, conversation) before they look, so neither can miss the other's change.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg.rows import dict_row

#: Open states: the delivery still has to reach the endpoint.
OPEN_STATES = ("waiting", "pending", "delivering")

#: Advisory lock spaces (two-int4 keys for conversations; one bigint key for the publisher and the pumps).
CONVERSATION_LOCK_CLASS = 0x7A71
PUBLISH_LOCK = 0x7A71 << 44
PUMP_LOCK_BASE = (0x7A71 << 44) + 1


def conversation_lock(endpoint_id: int, conversation: str) -> int:
    """The int4 object id of the advisory lock of (endpoint, conversation)."""
    digest = hashlib.blake2b(f"{endpoint_id}:{conversation}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_keys(keys: set[tuple[int, str]]) -> list[int]:
    """Sorted distinct lock ids of ``keys`` (everyone locks in this order: no deadlock)."""
    return sorted({conversation_lock(endpoint_id, conversation) for endpoint_id, conversation in keys})


LOCK_CONVERSATIONS = f"""
SELECT count(pg_advisory_xact_lock({CONVERSATION_LOCK_CLASS}, k))
FROM unnest(%(locks)s::int[]) WITH ORDINALITY AS u(k, n)
"""

# -- publishing -----------------------------------------------------------------------------------------

TRY_PUBLISH_LOCK = f"SELECT pg_try_advisory_xact_lock({PUBLISH_LOCK})"

UNPUBLISHED = "SELECT id, company_id FROM events WHERE seq IS NULL ORDER BY id LIMIT %(limit)s"
ANY_UNPUBLISHED = "SELECT 1 FROM events WHERE seq IS NULL LIMIT 1"

#: Advance the global counter (company 0) and each company's by how many events it publishes now.
ADVANCE_COUNTERS = """
INSERT INTO event_counters (company_id, last_seq)
SELECT c, n FROM unnest(%(companies)s::bigint[], %(counts)s::bigint[]) AS u(c, n)
ON CONFLICT (company_id) DO UPDATE SET last_seq = event_counters.last_seq + EXCLUDED.last_seq
RETURNING company_id, last_seq
"""

SET_SEQUENCES = """
UPDATE events e SET seq = v.seq, company_seq = v.company_seq, published_at = now()
FROM unnest(%(ids)s::bigint[], %(seqs)s::bigint[], %(company_seqs)s::bigint[]) AS v(id, seq, company_seq)
WHERE e.id = v.id
"""

#: (endpoint, event) pairs the events of a batch go to: enabled endpoints of the company that take the type.
MATCHES = """
SELECT w.id AS endpoint_id, ev.id AS event_id, ev.seq, ev.conversation
FROM events ev
JOIN webhook_endpoints w ON w.company_id = ev.company_id AND w.enabled
 AND (jsonb_array_length(w.event_types) = 0 OR w.event_types ? ev.type)
WHERE ev.id = ANY(%(ids)s)
"""

#: New deliveries: the first of its conversation with nothing open before it is ``pending``, others ``waiting``.
#: Run after ``LOCK_CONVERSATIONS`` over the same keys (a fresh snapshot after the locks).
INSERT_DELIVERIES = """
INSERT INTO event_deliveries (endpoint_id, event_id, seq, conversation, state, next_attempt_at)
SELECT m.endpoint_id, m.event_id, m.seq, m.conversation,
       CASE WHEN row_number() OVER (PARTITION BY m.endpoint_id, m.conversation ORDER BY m.seq) = 1
             AND NOT EXISTS (SELECT 1 FROM event_deliveries o
                             WHERE o.endpoint_id = m.endpoint_id AND o.conversation = m.conversation
                               AND o.state IN ('waiting', 'pending', 'delivering'))
            THEN 'pending' ELSE 'waiting' END,
       now()
FROM unnest(%(endpoints)s::bigint[], %(events)s::bigint[], %(seqs)s::bigint[], %(conversations)s::text[])
     AS m(endpoint_id, event_id, seq, conversation)
ON CONFLICT (event_id, endpoint_id) DO NOTHING
RETURNING endpoint_id, state
"""

NOTIFY_PUBLISHED = "SELECT pg_notify('zapq_events', %(seq)s)"

#: Promote the next ``waiting`` delivery of each (endpoint, conversation) that has nothing pending or in flight.
#: Run after ``LOCK_CONVERSATIONS`` over the same keys.
PROMOTE = """
UPDATE event_deliveries d SET state = 'pending', next_attempt_at = now()
FROM (
  SELECT DISTINCT ON (k.endpoint_id, k.conversation) w.id
  FROM unnest(%(endpoints)s::bigint[], %(conversations)s::text[]) AS k(endpoint_id, conversation)
  JOIN event_deliveries w ON w.endpoint_id = k.endpoint_id AND w.conversation = k.conversation
                         AND w.state = 'waiting'
  WHERE NOT EXISTS (SELECT 1 FROM event_deliveries a
                    WHERE a.endpoint_id = k.endpoint_id AND a.conversation = k.conversation
                      AND a.state IN ('pending', 'delivering'))
  ORDER BY k.endpoint_id, k.conversation, w.seq
) h
WHERE d.id = h.id
RETURNING d.endpoint_id
"""

# -- delivering -----------------------------------------------------------------------------------------

ENDPOINT = """
SELECT id, company_id, url, enabled, secret, previous_secret, previous_secret_expires_at, rate_per_second,
       max_in_flight, failing_since
FROM webhook_endpoints WHERE id = %(id)s
"""

#: What a pump that just took an endpoint's lock finds in flight was left by a dead pump: due again now.
RECLAIM = """
UPDATE event_deliveries SET state = 'pending', lease_until = NULL
WHERE endpoint_id = %(endpoint)s AND state = 'delivering'
"""

#: Take up to ``limit`` due heads of the endpoint, oldest due first, with what their request needs.
CLAIM = """
UPDATE event_deliveries d SET state = 'delivering', lease_until = now() + make_interval(secs => %(lease_s)s)
FROM events ev
WHERE d.id IN (SELECT id FROM event_deliveries
               WHERE endpoint_id = %(endpoint)s AND state = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
  AND ev.id = d.event_id
RETURNING d.id, d.attempts, d.conversation, ev.id AS event_id, ev.type, ev.occurred_at, ev.data
"""

#: Record attempt outcomes (only of deliveries still ``delivering``: a replayed or reclaimed one is left alone).
RECORD_OUTCOMES = """
UPDATE event_deliveries d SET
  state = v.state, attempts = d.attempts + 1, next_attempt_at = COALESCE(v.next_at, d.next_attempt_at),
  lease_until = NULL, last_status = v.status, last_error = v.error, last_attempt_at = v.at,
  delivered_at = CASE WHEN v.state = 'delivered' THEN v.at ELSE d.delivered_at END
FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(next_at)s::timestamptz[], %(statuses)s::int[],
            %(errors)s::text[], %(at)s::timestamptz[]) AS v(id, state, next_at, status, error, at)
WHERE d.id = v.id AND d.state = 'delivering'
RETURNING d.id, d.endpoint_id, d.conversation, d.state, d.attempts
"""

INSERT_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, endpoint_id, attempt, attempted_at, status_code, error, latency_ms,
                               response_excerpt)
SELECT * FROM unnest(%(ids)s::bigint[], %(endpoints)s::bigint[], %(attempts)s::int[], %(at)s::timestamptz[],
                     %(statuses)s::int[], %(errors)s::text[], %(latencies)s::int[], %(excerpts)s::text[])
"""

ENDPOINTS_SUCCEEDED = """
UPDATE webhook_endpoints SET failing_since = NULL, last_success_at = now() WHERE id = ANY(%(ids)s)
"""

ENDPOINTS_FAILED = """
UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now()), last_failure_at = now(),
  last_failure_reason = v.reason
FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS v(id, reason)
WHERE webhook_endpoints.id = v.id
"""

#: Disable endpoints that answered 410 Gone, or whose every attempt failed for the whole disable period.
DISABLE_ENDPOINTS = """
UPDATE webhook_endpoints SET enabled = false, disabled_at = now(),
  disabled_reason = CASE WHEN id = ANY(%(gone)s) THEN 'the endpoint answered 410 Gone'
                         ELSE 'every delivery failed since ' || zapq_iso(failing_since) END
WHERE enabled AND (id = ANY(%(gone)s)
      OR (id = ANY(%(failed)s) AND failing_since < now() - make_interval(secs => %(disable_after_s)s)))
RETURNING id, company_id, url, disabled_reason
"""

#: The earliest due time of the endpoint's pending deliveries (when its pump should run next).
NEXT_DUE = """
SELECT min(next_attempt_at) FROM event_deliveries WHERE endpoint_id = %(endpoint)s AND state = 'pending'
"""

#: Per enabled endpoint with open work: when its pump must run next (now for stale in-flight rows). The sweep
#: kicks those due and schedules a wake-up for the others (what Redis may have lost).
NEXT_DUE_BY_ENDPOINT = """
SELECT d.endpoint_id,
       min(CASE WHEN d.state = 'pending' THEN d.next_attempt_at
                WHEN d.lease_until < now() THEN now() ELSE d.lease_until END) AS due,
       now() AS now
FROM event_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
WHERE w.enabled AND d.state IN ('pending', 'delivering')
GROUP BY d.endpoint_id
"""

#: Enabled endpoints with deliveries pending or in flight: a dispatcher starting up kicks them all, so the
#: in-flight work of a dispatcher that died is taken over at once (its pump locks went with its connection).
OPEN_ENDPOINTS = """
SELECT DISTINCT d.endpoint_id FROM event_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
WHERE w.enabled AND d.state IN ('pending', 'delivering')
"""

#: Conversations with waiting deliveries but no head (should not happen; the sweep repairs it).
HEADLESS = """
SELECT DISTINCT w.endpoint_id, w.conversation FROM event_deliveries w
WHERE w.state = 'waiting' AND NOT EXISTS (
  SELECT 1 FROM event_deliveries a WHERE a.endpoint_id = w.endpoint_id AND a.conversation = w.conversation
    AND a.state IN ('pending', 'delivering'))
LIMIT 1000
"""

# -- replay ---------------------------------------------------------------------------------------------

#: Make a delivery open again with fresh attempts; it waits for its turn in its conversation.
REOPEN_DELIVERY = """
UPDATE event_deliveries SET state = 'waiting', attempts = 0, next_attempt_at = now(), lease_until = NULL
WHERE id = %(id)s AND state IN ('delivered', 'failed')
RETURNING endpoint_id, conversation
"""

#: Reopen every delivery of an endpoint whose event occurred since a time ("recover since"); events published
#: before the endpoint existed or matched are not delivered retroactively.
REOPEN_SINCE = """
UPDATE event_deliveries d SET state = 'waiting', attempts = 0, next_attempt_at = now(), lease_until = NULL
FROM events ev
WHERE d.endpoint_id = %(endpoint)s AND d.state IN ('delivered', 'failed') AND ev.id = d.event_id
  AND ev.occurred_at >= %(since)s AND (%(only_failed)s IS FALSE OR d.state = 'failed')
RETURNING d.endpoint_id, d.conversation
"""

# -- reading --------------------------------------------------------------------------------------------

#: One published event by its internal id (``GET /api/events/{id}``).
PUBLISHED_EVENT = """
SELECT id, type, company_id, company_seq, seq, conversation, occurred_at, data FROM events
WHERE id = %(id)s AND seq IS NOT NULL
"""


async def published_event(conn: Any, event_id: int) -> dict[str, Any] | None:
    """One published event (an async psycopg connection), or ``None``."""
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(PUBLISHED_EVENT, {"id": event_id})
    row: dict[str, Any] | None = await cursor.fetchone()
    return row


def rows(cursor: Any) -> list[dict[str, Any]]:
    """A psycopg cursor's rows as dicts."""
    columns = [c.name for c in cursor.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
