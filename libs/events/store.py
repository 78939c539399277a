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
FROM unnest(%(locks)b::int[]) WITH ORDINALITY AS u(k, n)
"""

# -- publishing -----------------------------------------------------------------------------------------

TRY_PUBLISH_LOCK = f"SELECT pg_try_advisory_xact_lock({PUBLISH_LOCK})"

UNPUBLISHED = "SELECT id, company_id FROM events WHERE seq IS NULL ORDER BY id LIMIT %(limit)s"
ANY_UNPUBLISHED = "SELECT 1 FROM events WHERE seq IS NULL LIMIT 1"

#: Advance the global counter (company 0) and each company's by how many events it publishes now.
ADVANCE_COUNTERS = """
INSERT INTO event_counters (company_id, last_seq)
SELECT c, n FROM unnest(%(companies)b::bigint[], %(counts)b::bigint[]) AS u(c, n)
ON CONFLICT (company_id) DO UPDATE SET last_seq = event_counters.last_seq + EXCLUDED.last_seq
RETURNING company_id, last_seq
"""

SET_SEQUENCES = """
UPDATE events e SET seq = v.seq, company_seq = v.company_seq, published_at = now()
FROM unnest(%(ids)b::bigint[], %(seqs)b::bigint[], %(company_seqs)b::bigint[]) AS v(id, seq, company_seq)
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
#: Whether a conversation has an open delivery is one probe of ``ix_event_deliveries_open`` per row (``LATERAL …
#: LIMIT 1``). As a ``NOT EXISTS`` in the select list, the prepared statement's generic plan — made while the table
#: held few open deliveries — could hash every open delivery once per batch instead: a backlog of 30,000 made each
#: batch of 200 read all 30,000 (26 ms against 0.7), so the publisher slowed as the backlog grew.
INSERT_DELIVERIES = """
INSERT INTO event_deliveries (endpoint_id, event_id, seq, conversation, state, next_attempt_at)
SELECT m.endpoint_id, m.event_id, m.seq, m.conversation,
       CASE WHEN row_number() OVER (PARTITION BY m.endpoint_id, m.conversation ORDER BY m.seq) = 1
             AND open.found IS NULL
            THEN 'pending' ELSE 'waiting' END,
       now()
FROM unnest(%(endpoints)b::bigint[], %(events)b::bigint[], %(seqs)b::bigint[], %(conversations)b::text[])
     AS m(endpoint_id, event_id, seq, conversation)
LEFT JOIN LATERAL (SELECT true AS found FROM event_deliveries o
                   WHERE o.endpoint_id = m.endpoint_id AND o.conversation = m.conversation
                     AND o.state IN ('waiting', 'pending', 'delivering')
                   LIMIT 1) open ON true
ON CONFLICT (event_id, endpoint_id) DO NOTHING
RETURNING endpoint_id, state
"""

NOTIFY_PUBLISHED = "SELECT pg_notify('zapq_events', %(seq)s)"

#: Promote the next ``waiting`` delivery of each (endpoint, conversation) that has nothing pending or in flight.
#: Run after ``LOCK_CONVERSATIONS`` over the same (distinct) keys. Each key is its own probe of
#: ``ix_event_deliveries_open`` (``LATERAL … LIMIT 1``): joined to the keys as a set, the planner — expecting few open
#: deliveries — could read that whole partial index instead, with every dead entry the churn of delivered rows leaves in
#: it until a vacuum (34 ms and 200,000 buffers a call on a table with 200,000 delivered rows, against 0.2 ms).
PROMOTE = """
UPDATE event_deliveries d SET state = 'pending', next_attempt_at = now()
FROM (
  SELECT h.id
  FROM unnest(%(endpoints)b::bigint[], %(conversations)b::text[]) AS k(endpoint_id, conversation)
  CROSS JOIN LATERAL (
    SELECT w.id FROM event_deliveries w
    WHERE w.endpoint_id = k.endpoint_id AND w.conversation = k.conversation AND w.state = 'waiting'
    ORDER BY w.seq LIMIT 1
  ) h
  WHERE NOT EXISTS (SELECT 1 FROM event_deliveries a
                    WHERE a.endpoint_id = k.endpoint_id AND a.conversation = k.conversation
                      AND a.state IN ('pending', 'delivering'))
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
RETURNING d.id, d.attempts, d.conversation, ev.id AS event_id, ev.type, ev.occurred_at, ev.data, ev.traceparent
"""

#: Record attempt outcomes (only of deliveries still ``delivering``: a replayed or reclaimed one is left alone).
RECORD_OUTCOMES = """
UPDATE event_deliveries d SET
  state = v.state, attempts = d.attempts + 1, next_attempt_at = COALESCE(v.next_at, d.next_attempt_at),
  lease_until = NULL, last_status = v.status, last_error = v.error, last_attempt_at = v.at,
  delivered_at = CASE WHEN v.state = 'delivered' THEN v.at ELSE d.delivered_at END
FROM unnest(%(ids)b::bigint[], %(states)b::text[], %(next_at)b::timestamptz[], %(statuses)b::int[],
            %(errors)b::text[], %(at)b::timestamptz[]) AS v(id, state, next_at, status, error, at)
WHERE d.id = v.id AND d.state = 'delivering'
RETURNING d.id, d.endpoint_id, d.conversation, d.state, d.attempts
"""

INSERT_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, endpoint_id, attempt, attempted_at, status_code, error, latency_ms,
                               response_excerpt)
SELECT * FROM unnest(%(ids)b::bigint[], %(endpoints)b::bigint[], %(attempts)b::int[], %(at)b::timestamptz[],
                     %(statuses)b::int[], %(errors)b::text[], %(latencies)b::int[], %(excerpts)b::text[])
"""

#: An endpoint that took a delivery is not failing. Its ``last_success_at`` is kept to the second: every batch of
#: outcomes rewrote the row (and held its lock until the batch committed, so the dispatcher's transactions for one
#: endpoint queued behind each other); now only a batch that changes something does.
ENDPOINTS_SUCCEEDED = """
UPDATE webhook_endpoints SET failing_since = NULL, last_success_at = now()
WHERE id = ANY(%(ids)s)
  AND (failing_since IS NOT NULL OR last_success_at IS NULL OR last_success_at < now() - interval '1 second')
"""

ENDPOINTS_FAILED = """
UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now()), last_failure_at = now(),
  last_failure_reason = v.reason
FROM unnest(%(ids)b::bigint[], %(reasons)b::text[]) AS v(id, reason)
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


# -- endpoints ------------------------------------------------------------------------------------------

ENDPOINT_COLUMNS = """id, company_id, url, description, event_types, enabled, disabled_reason, disabled_at,
rate_per_second, max_in_flight, failing_since, last_success_at, last_failure_at, last_failure_reason,
created_at, updated_at"""

COMPANY_EXISTS = "SELECT 1 FROM companies WHERE id = %s"

INSERT_ENDPOINT = f"""
INSERT INTO webhook_endpoints (company_id, url, description, event_types, enabled, secret, rate_per_second,
                               max_in_flight)
VALUES (%(company_id)s, %(url)s, %(description)s, %(types)s, %(enabled)s, %(secret)s, %(rate)s, %(in_flight)s)
RETURNING {ENDPOINT_COLUMNS}
"""

GET_ENDPOINT = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = %s"
LIST_ENDPOINTS = f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id LIMIT 1000"
LIST_COMPANY_ENDPOINTS = (
    f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE company_id = %s ORDER BY id LIMIT 1000"
)
DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = %s"

#: The current secret becomes the previous one (signing beside the new one until it expires).
ROTATE_SECRET = """
UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = %s, secret = %s,
  updated_at = now()
WHERE id = %s
"""


def update_endpoint(columns: list[str]) -> str:
    """Set the named columns (``%(column)s`` parameters) of endpoint ``%(id)s``."""
    assignments = ", ".join(f"{name} = %({name})s" for name in columns)
    return f"UPDATE webhook_endpoints SET {assignments}, updated_at = now() WHERE id = %(id)s"


#: Delivery figures of endpoints: open backlog, attempts and successes of the last 24 hours.
ENDPOINT_STATS = """
SELECT w.id,
  (SELECT count(*) FROM event_deliveries d WHERE d.endpoint_id = w.id
     AND d.state IN ('waiting', 'pending', 'delivering')) AS backlog,
  (SELECT count(*) FROM event_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'failed') AS failed,
  (SELECT count(*) FROM delivery_attempts a WHERE a.endpoint_id = w.id
     AND a.attempted_at > now() - interval '24 hours') AS attempts_24h,
  (SELECT count(*) FROM delivery_attempts a WHERE a.endpoint_id = w.id
     AND a.attempted_at > now() - interval '24 hours' AND a.status_code BETWEEN 200 AND 299) AS succeeded_24h
FROM webhook_endpoints w WHERE w.id = ANY(%(ids)s)
"""

#: Create (or reopen) the deliveries of one endpoint for the published events that ``%(where)s`` selects.
REPLAY_DELIVERIES = """
INSERT INTO event_deliveries (endpoint_id, event_id, seq, conversation, state, next_attempt_at)
SELECT w.id, ev.id, ev.seq, ev.conversation, 'waiting', now()
FROM events ev JOIN webhook_endpoints w ON w.id = %(endpoint)s AND w.company_id = ev.company_id
 AND (jsonb_array_length(w.event_types) = 0 OR w.event_types ? ev.type)
WHERE ev.seq IS NOT NULL AND {where}
ON CONFLICT (event_id, endpoint_id) DO UPDATE
  SET state = 'waiting', attempts = 0, next_attempt_at = now(), lease_until = NULL
  WHERE event_deliveries.state IN ('delivered', 'failed') AND NOT %(only_failed)s
     OR event_deliveries.state = 'failed'
RETURNING endpoint_id, conversation, id
"""

DELIVERY_STATE = "SELECT state FROM event_deliveries WHERE endpoint_id = %s AND event_id = %s"

#: Replaying a given-up delivery settles its dead letter (as a replay from the ledger would).
SETTLE_DEAD_LETTERS = """
UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1
WHERE message_id = ANY(%(message_ids)s) AND replayed_at IS NULL
"""

#: Every delivery of an event with its attempts, newest first.
EVENT_ATTEMPTS = """
SELECT d.id AS delivery_id, d.endpoint_id, d.state, d.attempts, d.next_attempt_at, d.delivered_at,
       a.attempt, a.attempted_at, a.status_code, a.error, a.latency_ms, a.response_excerpt
FROM event_deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
WHERE d.event_id = %s ORDER BY d.endpoint_id, a.attempted_at DESC NULLS LAST, a.id DESC
"""


# -- the feed -------------------------------------------------------------------------------------------

EVENT_COLUMNS = "id, type, company_id, company_seq, seq, conversation, occurred_at, data"

#: The last ``seq`` handed out (the global counter).
LAST_SEQ = "SELECT COALESCE((SELECT last_seq FROM event_counters WHERE company_id = 0), 0)"

#: What the publisher's ``NOTIFY`` wakes.
LISTEN_PUBLISHED = "LISTEN zapq_events"


def feed_query(where: str, *, newest_first: bool) -> str:
    """Published events matching ``where`` (a condition over ``events``), by ``seq``, ``LIMIT %(limit)s``."""
    order = "DESC" if newest_first else ""
    return f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY seq {order} LIMIT %(limit)s"


# -- pumps and give-ups ---------------------------------------------------------------------------------

TRY_PUMP_LOCK = "SELECT pg_try_advisory_lock(%s)"
PUMP_UNLOCK = "SELECT pg_advisory_unlock(%s)"

#: A delivery given up is recorded in the dead-letter ledger; replaying it runs ``redeliver_event``. Like
#: ``libs.deadletters.actions.record``: one row per delivery, refreshed when it fails again after a replay.
RECORD_DEAD_LETTERS = """
INSERT INTO dead_letters (message_id, queue_name, actor_name, args, kwargs, message, reason, error_type,
                          error_message, attempts, first_failed_at, last_failed_at)
SELECT v.message_id, %(queue)s, %(actor)s, '[]'::jsonb, v.kwargs, v.message, 'delivery_failed',
       'EventDeliveryError', v.error, v.attempts, v.first_at, v.last_at
FROM unnest(%(message_ids)b::text[], %(kwargs)b::jsonb[], %(messages)b::jsonb[], %(errors)b::text[],
            %(attempts)b::int[], %(first_at)b::timestamptz[], %(last_at)b::timestamptz[])
     AS v(message_id, kwargs, message, error, attempts, first_at, last_at)
ON CONFLICT (message_id) DO UPDATE SET
  error_message = EXCLUDED.error_message, attempts = EXCLUDED.attempts, last_failed_at = EXCLUDED.last_failed_at,
  replayed_at = NULL, created_at = now()
WHERE dead_letters.replayed_at IS NOT NULL OR dead_letters.last_failed_at < EXCLUDED.last_failed_at
"""

#: Old published events none of whose deliveries is still open.
PRUNE_EVENTS = """
DELETE FROM events WHERE id IN (
  SELECT ev.id FROM events ev
  WHERE ev.created_at < %(cutoff)s AND ev.seq IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.event_id = ev.id
                    AND d.state IN ('waiting', 'pending', 'delivering'))
  ORDER BY ev.id LIMIT %(limit)s)
"""


def rows(cursor: Any) -> list[dict[str, Any]]:
    """A psycopg cursor's rows as dicts."""
    columns = [c.name for c in cursor.description or []]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
