"""Hostile input at the webhook edge: each request gets a clear 4xx or is stored safely; nothing crashes.

In-process (Starlette ``TestClient``, server exceptions turned into responses so a crash shows as a 500)
against this session's Postgres and Redis; bodies that are accepted are then run through a real worker.
Rejected requests leave nothing behind; accepted ones end ``processed`` or ``failed`` (a permanent parse
error, dead-lettered at once) with nothing half-stored.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from libs.db.engine import Database
from libs.db.models import DeadLetter, Message, Webhook, WebhookStatus
from libs.ingest.edge import create_app
from libs.settings import Settings
from libs.whatsapp.signature import sign_meta
from tests.helpers import drain
from tests.ingest import factories as f

META_HEAD = b'{"object":"whatsapp_business_account","entry":'


@pytest.fixture
def client(settings: Settings, db: Database, broker: Any) -> Iterator[TestClient]:
    """The edge app with its lifespan running; a crash answers 500 instead of raising in the test."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, settings: Settings, body: Any, *, signature: str | None = "sign") -> Any:
    """POST raw ``body`` to the Meta endpoint, signed with the app secret unless told otherwise."""
    headers = {"content-type": "application/json"}
    if signature == "sign":
        headers["x-hub-signature-256"] = sign_meta(body if isinstance(body, bytes) else b"", settings.meta_app_secret)
    elif signature is not None:
        headers["x-hub-signature-256"] = signature
    return client.post("/webhooks/meta", content=body, headers=headers)


def stored(db: Database) -> int:
    """Webhook rows."""
    with db.session() as session:
        return int(session.execute(select(func.count()).select_from(Webhook)).scalar_one())


def nested(depth: int) -> bytes:
    """A Meta envelope whose ``entry`` is ``depth`` arrays deep."""
    return META_HEAD + b"[" * depth + b"]" * depth + b"}"


REJECTED: dict[str, tuple[bytes, str | None, int]] = {
    "no signature": (f.dumps(f.meta_payload()), None, 401),
    "empty signature": (f.dumps(f.meta_payload()), "", 401),
    "signature of another body": (f.dumps(f.meta_payload()), sign_meta(b"{}", "dev-meta-app-secret"), 401),
    "signature with another secret": (f.dumps(f.meta_payload()), sign_meta(f.dumps(f.meta_payload()), "x"), 401),
    "non-hex signature": (f.dumps(f.meta_payload()), "sha256=" + "z" * 64, 401),
    "sha1 signature": (f.dumps(f.meta_payload()), "sha1=" + "0" * 40, 401),
    "unsigned deep nesting": (nested(10_000), None, 401),
    "truncated JSON": (f.dumps(f.meta_payload())[:-7], "sign", 400),
    "empty body": (b"", "sign", 400),
    "JSON array": (b"[1,2,3]", "sign", 400),
    "wrong object": (b'{"object":"page","entry":[]}', "sign", 400),
    "object of the wrong type": (b'{"object":["whatsapp_business_account"]}', "sign", 400),
    "non-UTF-8 bytes": (META_HEAD + b'[],"x":"\xff\xfe\xc3\x28"}', "sign", 400),
    "raw surrogate bytes (not UTF-8)": (META_HEAD + b'[],"x":"\xed\xa0\x80"}', "sign", 400),
    "lone surrogate escape with NaN": (META_HEAD + b'[],"x":"\\ud800","n":NaN}', "sign", 400),
    "lone surrogate escape with 1e400": (META_HEAD + b'[],"x":"\\ud800","n":1e400}', "sign", 400),
    "10,000 levels of nesting": (nested(10_000), "sign", 400),
    "a 5,000-digit number": (META_HEAD + b"[]," + b'"n":' + b"9" * 5_000 + b"}", "sign", 400),
    "NaN": (META_HEAD + b'[],"n":NaN}', "sign", 400),
}


def nothing_enqueued(broker: Any, namespace: str) -> bool:
    """No ``webhooks`` job (nor its bookkeeping) exists in this session's namespace."""
    keys = (f"{namespace}:webhooks", f"{namespace}:webhooks.msgs", f"{namespace}:zapq:seq:webhooks")
    return int(broker.client.exists(*keys)) == 0


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_rejected_with_a_clear_4xx_and_nothing_stored(
    client: TestClient, settings: Settings, db: Database, broker: Any
) -> None:
    answers = {}
    for case, (body, signature, _) in REJECTED.items():
        response = post(client, settings, body, signature=signature)
        answers[case] = response.status_code
        assert response.json()["error"], case
    # And the Baileys endpoint: shared secret first, then the same JSON checks
    secret = {settings.baileys_secret_header: settings.baileys_webhook_secret}
    event = b'{"event":"messages.upsert","instance":"x","data":'
    baileys = {
        "baileys without secret": (event + b"{}}", {}, 401),
        "baileys with a wrong secret": (event + b"{}}", {settings.baileys_secret_header: "guess"}, 401),
        "baileys 10,000 levels": (event + b"[" * 10_000 + b"]" * 10_000 + b"}", secret, 400),
        "baileys non-UTF-8": (event + b'"\xff"}', secret, 400),
        "baileys lone surrogate, 10,000 levels": (
            event + b'{"x":"\\udaae","y":' + b"[" * 10_000 + b"]" * 10_000 + b"}}",
            secret,
            400,
        ),
        "baileys event is a number": (b'{"event":5,"instance":"x"}', secret, 400),
    }
    for case, (body, headers, _) in baileys.items():
        answers[case] = client.post("/webhooks/baileys", content=body, headers=headers).status_code
    expected = {case: code for case, (_, _, code) in REJECTED.items()}
    expected.update({case: code for case, (_, _, code) in baileys.items()})
    assert answers == expected
    print(f"\nHostile input: {len(answers)} requests rejected ({dict(Counter(answers.values()))}), nothing stored")
    assert stored(db) == 0
    assert nothing_enqueued(broker, settings.redis_namespace)


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_bodies_over_the_limit_are_413(client: TestClient, settings: Settings, db: Database, broker: Any) -> None:
    limit = settings.webhook_max_bytes
    big = META_HEAD + b'[],"pad":"' + b"x" * limit + b'"}'
    # Declared size over the limit
    assert post(client, settings, big).status_code == 413
    # No declared size (chunked): counted while streaming
    chunks = iter([big[i : i + 65_536] for i in range(0, len(big), 65_536)])
    headers = {"x-hub-signature-256": sign_meta(big, settings.meta_app_secret)}
    assert client.post("/webhooks/meta", content=chunks, headers=headers).status_code == 413
    # The Baileys endpoint too (authenticated first)
    headers = {settings.baileys_secret_header: settings.baileys_webhook_secret}
    assert client.post("/webhooks/baileys", content=big, headers=headers).status_code == 413
    assert stored(db) == 0
    assert nothing_enqueued(broker, settings.redis_namespace)


def meta_text(wamid: str, text: str, sender: str = f.CUSTOMER) -> dict[str, Any]:
    """A Meta webhook with one inbound text."""
    return f.meta_payload(
        f.meta_change(messages=[f.meta_message(wamid, "text", {"body": text}, sender=sender)]),
    )


HOSTILE_TEXTS = [
    "'); DROP TABLE messages; --",
    '" OR 1=1; DELETE FROM webhooks WHERE ""="',
    "<script>alert(document.cookie)</script>",
    "{{7*7}} ${7*7} %s %n %x",
    "\u202e\u0000nul and right-to-left override\u0000",
    "🙂" * 2_000,
]

#: name → (body, expected webhook status after processing)
ACCEPTED: dict[str, tuple[bytes, WebhookStatus]] = {
    "200 levels of nesting (parsed, refused)": (nested(200), WebhookStatus.FAILED),
    "entry is a string": (META_HEAD + b'"x"}', WebhookStatus.FAILED),
    "entry is a million numbers": (META_HEAD + b"[" + b"1," * 1_000_000 + b"1]}", WebhookStatus.FAILED),
    "message id is a number": (
        f.dumps(f.meta_payload(f.meta_change(messages=[{"from": "1", "id": 5, "timestamp": "1", "type": "text"}]))),
        WebhookStatus.FAILED,
    ),
    "third message of three is broken": (
        f.dumps(
            f.meta_payload(
                f.meta_change(
                    messages=[
                        f.meta_message("wamid.HALF1", "text", {"body": "one"}),
                        f.meta_message("wamid.HALF2", "text", {"body": "two"}),
                        {"from": f.CUSTOMER, "id": "wamid.HALF3", "timestamp": {"$gt": ""}, "type": "text"},
                    ]
                )
            )
        ),
        WebhookStatus.FAILED,
    ),
    "unknown change field": (f.dumps(f.meta_payload(f.meta_change(field="account_update"))), WebhookStatus.PROCESSED),
    "unknown message type": (
        f.dumps(f.meta_payload(f.meta_change(messages=[f.meta_message("wamid.HOLO", "hologram", {"x": 1})]))),
        WebhookStatus.PROCESSED,
    ),
    "1,000 messages in one webhook": (
        f.dumps(
            f.meta_payload(
                f.meta_change(messages=[f.meta_message(f"wamid.MANY{n}", "text", {"body": "x"}) for n in range(1000)])
            )
        ),
        WebhookStatus.PROCESSED,
    ),
    **{
        f"hostile text {n}": (f.dumps(meta_text(f"wamid.HOSTILE{n}", text)), WebhookStatus.PROCESSED)
        for n, text in enumerate(HOSTILE_TEXTS)
    },
    # Valid JSON no UTF-8 text can hold (orjson refuses it): stored raw, the worker replaces each with U+FFFD
    "lone surrogates": (
        json.dumps(
            meta_text("wamid.SURROGATE", "a\udaae b\udc00\u0000 \ud83d\ude42 c\ud800"), ensure_ascii=True
        ).encode(),
        WebhookStatus.PROCESSED,
    ),
}


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_accepted_hostile_bodies_end_processed_or_cleanly_failed(
    client: TestClient, settings: Settings, db: Database, broker: Any, worker: dramatiq.Worker
) -> None:
    # Given the number of the webhooks connected
    f.meta_connection(db, f.company(db))
    # When every hostile-but-signed body is posted, twice (a replay)
    ids: dict[str, int] = {}
    for name, (body, _) in ACCEPTED.items():
        first, replay = post(client, settings, body), post(client, settings, body)
        assert first.status_code == 200, (name, first.text)
        assert replay.status_code == 200 and replay.json() == {"status": "duplicate"}, name
        ids[name] = first.json()["id"]
    drain(broker, worker)
    # Then each ends as expected, stored once, failures dead-lettered as permanent (never retried), no 500
    with db.session() as session:
        rows = {row.id: row for row in session.execute(select(Webhook)).scalars()}
        letters = {row.kwargs.get("webhook_id"): row for row in session.execute(select(DeadLetter)).scalars()}
        texts = {row.external_id: row.body for row in session.execute(select(Message)).scalars()}
    assert len(rows) == len(ACCEPTED)
    outcome = {name: rows[ids[name]].status for name in ACCEPTED}
    assert outcome == {name: expected for name, (_, expected) in ACCEPTED.items()}
    failed = {ids[name] for name, (_, expected) in ACCEPTED.items() if expected == WebhookStatus.FAILED}
    assert set(letters) == failed
    assert {(row.reason, row.error_type) for row in letters.values()} == {("permanent", "libs.errors.ParseError")}
    assert all(rows[i].error for i in failed)
    # And nothing of a failed webhook was half-stored; hostile text is stored verbatim (NULs aside)
    assert not {"wamid.HALF1", "wamid.HALF2"} & set(texts)
    assert texts["wamid.HOLO"] is None
    assert sum(1 for key in texts if key and key.startswith("wamid.MANY")) == 1000
    for n, text in enumerate(HOSTILE_TEXTS):
        assert texts[f"wamid.HOSTILE{n}"] == text.replace("\u0000", ""), n
    assert texts["wamid.SURROGATE"] == "a\ufffd b\ufffd 🙂 c\ufffd"  # a pair stays the character it encodes
    # And the tables the SQL payloads name are intact
    assert stored(db) == len(ACCEPTED)
    print(
        f"\nHostile input: {len(ACCEPTED)} signed bodies accepted (+ {len(ACCEPTED)} replays answered 'duplicate'): "
        f"{len(ACCEPTED) - len(failed)} processed, {len(failed)} failed cleanly (permanent ParseError); no 500"
    )


@pytest.mark.faults
@pytest.mark.timeout(60)
def test_signed_json_text_is_kept_byte_for_byte(
    client: TestClient, settings: Settings, db: Database, broker: Any
) -> None:
    body = json.dumps(meta_text("wamid.RAW", "\u00e9\ud83d\ude42"), ensure_ascii=True).encode()
    assert post(client, settings, body).status_code == 200
    with db.session() as session:
        assert session.execute(select(Webhook.body)).scalar_one() == body
