"""``init_sentry`` with the real SDK sending over HTTP to the fake Sentry: what arrives, and what never does."""

from __future__ import annotations

import gzip
import json
import uuid
import zlib

import httpx
import pytest
import sentry_sdk

from libs.observability import init_sentry, scrub
from libs.settings import Settings
from tests.fakes.sentry import SentryRecorder, parse_envelope
from tests.observability.support import PHONE, SERVICE, TOKEN, flush


def test_no_dsn_means_no_client(settings: Settings) -> None:
    # Given settings without a DSN (the test default)
    # When Sentry is initialised
    started = init_sentry(settings.model_copy(update={"sentry_dsn": ""}), service=SERVICE)
    # Then nothing is set up
    assert started is False
    assert not sentry_sdk.get_client().is_active()


def test_message_arrives_over_http_with_auth_and_service(sentry: SentryRecorder, settings: Settings) -> None:
    # When a message is captured and the SDK flushed
    event_id = sentry_sdk.capture_message("hello from the tests")
    flush()

    # Then one gzip envelope arrived with the DSN's key, and its event is intact
    [envelope] = [env for env in sentry.envelopes() if any(item.type == "event" for item in env.items)]
    assert envelope.auth["sentry_key"] == "publickey"
    assert envelope.content_encoding == "gzip"
    assert envelope.path == "/api/1/envelope/"
    [event] = sentry.events()
    assert event["event_id"] == event_id
    assert event["message"] == "hello from the tests"
    assert event["server_name"] == SERVICE
    assert event["environment"] == settings.env
    assert event["tags"]["service"] == SERVICE
    assert event["release"] == sentry_sdk.get_client().options["release"]
    assert sentry.problems() == []
    assert sentry.rejected == []


def test_scrubs_phones_and_tokens_from_everything_sent(sentry: SentryRecorder) -> None:
    # Given a phone number and a token in the message, tags, extras, context and a breadcrumb
    sentry_sdk.add_breadcrumb(message=f"sending to {PHONE}", data={"recipient": PHONE, "note": f"to {PHONE}"})
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("wa", PHONE)
        scope.set_extra("detail", f"provider said: invalid token {TOKEN} for {PHONE}")
        scope.set_extra("headers", {"Authorization": f"Bearer {TOKEN}", "X-Other": "kept"})
        scope.set_context("job", {"text": "hi there", "body": "secret body", "count": 3})
        sentry_sdk.capture_message(f"could not reach {PHONE} (Bearer {TOKEN})")
    flush()

    # Then none of it left the process in clear, and the event still has a valid structure
    [event] = sentry.events()
    raw = sentry.raw_bytes()
    for secret in (PHONE, PHONE.lstrip("+"), "999998888", TOKEN, "secret body", "hi there"):
        assert secret.encode() not in raw, secret
    assert event["extra"]["headers"]["X-Other"] == "kept"
    assert event["contexts"]["job"]["count"] == 3
    assert "trace" in event["contexts"]
    assert sentry.problems() == []


RELEASE = "zapq@2024-09-17-12345678"


@pytest.fixture
def release(monkeypatch: pytest.MonkeyPatch) -> str:
    """A release the SDK reads from the environment at init (request it before ``sentry``)."""
    monkeypatch.setenv("SENTRY_RELEASE", RELEASE)
    return RELEASE


def test_identifiers_survive_scrubbing(release: str, sentry: SentryRecorder) -> None:
    # Given ids, a release and times whose text contains long digit runs (as roughly half of uuid4s do)
    event_id = "20240917" + uuid.uuid4().hex[8:]
    trace_id = "12345678" + "ab" + "9" * 10 + uuid.uuid4().hex[20:]
    message_id = "20240917-5f3c-4d2a-9b1e-7c8d9e0f1a2b"
    sentry_sdk.continue_trace({"sentry-trace": f"{trace_id}-{'1' * 16}-0"})

    # When an event carrying them is captured
    with sentry_sdk.new_scope() as scope:
        scope.set_extra("message_id", message_id)
        returned = sentry_sdk.capture_event({"message": "ids", "event_id": event_id, "level": "error"})
    flush()

    # Then Sentry gets them unchanged
    [event] = sentry.events()
    assert returned == event_id
    assert event["event_id"] == event_id
    assert event["contexts"]["trace"]["trace_id"] == trace_id
    assert event["extra"]["message_id"] == message_id
    assert event["release"] == release
    assert sentry.problems() == []  # the event's and breadcrumbs' timestamps among them


def test_scrub_keeps_structure() -> None:
    # Given an event-shaped dict, scrubbing keeps keys that merely contain a secret-looking word
    event = {
        "contexts": {"trace": {"trace_id": "a" * 32}},
        "stacktrace": {"frames": [{"context_line": "x = 1", "pre_context": [], "post_context": []}]},
        "extra": {"total": 3, "to": PHONE, "from": PHONE, "access_token": TOKEN, "phone_number": PHONE, "body": "b"},
    }
    scrubbed = scrub(event)
    assert scrubbed["contexts"] == {"trace": {"trace_id": "a" * 32}}
    assert scrubbed["stacktrace"]["frames"][0]["context_line"] == "x = 1"
    assert scrubbed["extra"]["total"] == 3
    for key in ("to", "from", "access_token", "phone_number", "body"):
        assert scrubbed["extra"][key] == "[redacted]", key


def test_fake_accepts_deflate_store_and_rejects_bad_key(sentry_server: tuple[str, SentryRecorder]) -> None:
    # Given the fake server directly (the SDK only ever sends gzip envelopes)
    dsn, recorder = sentry_server
    recorder.clear()
    base = "http://" + dsn.split("@", 1)[1].rsplit("/", 1)[0]
    event = {"event_id": uuid.uuid4().hex, "message": "legacy", "level": "info"}
    envelope = b"\n".join(
        [
            json.dumps({"event_id": event["event_id"]}).encode(),
            json.dumps({"type": "event", "length": len(json.dumps(event))}).encode(),
            json.dumps(event).encode(),
            json.dumps({"type": "attachment"}).encode(),
            b"no length: up to the newline",
        ]
    )
    auth = {"x-sentry-auth": "Sentry sentry_key=publickey, sentry_version=7"}
    with httpx.Client(base_url=base, timeout=5.0) as client:
        # When a deflate envelope, a gzip /store/ event and a request with the wrong key are posted
        ok = client.post(
            "/api/1/envelope/", content=zlib.compress(envelope), headers={**auth, "content-encoding": "deflate"}
        )
        stored = client.post(
            "/api/1/store/?sentry_key=publickey",
            content=gzip.compress(json.dumps(event).encode()),
            headers={"content-encoding": "gzip"},
        )
        bad = client.post("/api/1/envelope/", content=envelope, headers={"x-sentry-auth": "Sentry sentry_key=nope"})

    # Then both valid ones are recorded, item by item, and the bad key is refused
    assert (ok.status_code, stored.status_code, bad.status_code) == (200, 200, 401)
    assert [e["message"] for e in recorder.events()] == ["legacy", "legacy"]
    assert recorder.items("attachment")[0].payload == b"no length: up to the newline"
    assert [r.status_code for r in recorder.rejected] == [401]
    assert parse_envelope(envelope)[0] == {"event_id": event["event_id"]}
