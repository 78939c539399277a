"""Inbound media fetched and kept: an inbound image's file is resolved, downloaded with the connection's token,
checked (size, SHA-256) and stored; a mismatch is retried by the ``media`` queue's policy; an expired URL is
asked again; a Baileys file comes from the bridge's base64 export; running the job twice keeps one file."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import orjson
import pytest
from sqlalchemy import text

from libs import contracts
from libs.db.engine import Database
from libs.db.models import WebhookSource
from libs.errors import PermanentError, ProviderPermanentError, TransientError
from libs.events.types import DATA_MODELS
from libs.ingest import process
from libs.media.errors import MediaIntegrityError, MediaTooLargeError, MediaUrlExpiredError
from libs.media.fetch import fetch_inbound, give_up, hash_matches, sweep
from libs.middleware.policy import RetryPolicy
from libs.middleware.retry import RetryMiddleware
from libs.settings import Settings
from tests.fakes.evolution import DEFAULT_INSTANCE
from tests.ingest import factories as f
from tests.media.conftest import Numbers, close_context, fetch_context, local_storage, run

#: The media queue's policy in these tests: the production shape, much faster.
FAST_MEDIA = RetryPolicy(attempts=3, kind="fixed", base_ms=50)
WAIT_S = 20.0


def register(meta_url: str, size: int = 200_000) -> dict[str, Any]:
    """A file on the fake Graph API, as if a user had sent it: its id, sha256 and size."""
    media_id = str(uuid.uuid4().int)[:16]
    response = httpx.post(f"{meta_url}/_fake/media", json={"id": media_id, "mime_type": "image/jpeg", "size": size})
    return dict(response.json())


def inbound_image(db: Database, numbers: Numbers, media: dict[str, Any], *, sha256: str | None = None) -> int:
    """Store an inbound image webhook for ``media`` through the ingest path; the new message's id."""
    image = {"mime_type": "image/jpeg", "sha256": sha256 or media["sha256"], "id": media["id"]}
    wamid = f"wamid.{uuid.uuid4().hex}"
    body = f.dumps(
        f.meta_payload(f.meta_change(numbers.phone_number_id, messages=[f.meta_message(wamid, "image", image)]))
    )
    outcome = process.process_webhook(db, f.webhook_row(db, body))
    assert outcome is not None and len(outcome.media) == 1
    return outcome.media[0]


def stored(db: Database, message_id: int) -> dict[str, Any] | None:
    with db.session() as session:
        payload = session.execute(text("SELECT payload FROM messages WHERE id = :id"), {"id": message_id}).scalar_one()
    value = payload.get("stored_media")
    return dict(value) if value is not None else None


def stored_by_wamid(db: Database, wamid: str) -> dict[str, Any] | None:
    with db.session() as session:
        payload = session.execute(text("SELECT payload FROM messages WHERE external_id = :w"), {"w": wamid}).scalar()
    return None if payload is None else payload.get("stored_media")


def media_events(db: Database, message_id: int) -> list[dict[str, Any]]:
    with db.session() as session:
        rows = session.execute(
            text("SELECT data FROM events WHERE type = 'message.media' AND (data->>'message_id')::bigint = :id"),
            {"id": message_id},
        ).scalars()
        return [dict(row) for row in rows]


def file_bytes(settings: Settings, media_id: str) -> bytes:
    async def read() -> bytes:
        ctx = await fetch_context(settings, "http://unused")
        try:
            async with ctx.pool.connection() as conn:
                from libs.media import store

                row = await store.get(conn, media_id)
            assert row is not None
            return b"".join([chunk async for chunk in ctx.storage.read(row["storage_key"])])
        finally:
            await close_context(ctx)

    return run(read())


def fetch(settings: Settings, graph_url: str, message_id: int) -> str | None:
    async def go() -> str | None:
        ctx = await fetch_context(settings, graph_url)
        try:
            return await fetch_inbound(ctx, message_id)
        finally:
            await close_context(ctx)

    return run(go())


@pytest.fixture
def fetcher(settings: Settings, fake_meta: str, broker: Any) -> Iterator[Any]:
    """The media fetcher's resources pointed at the fake Graph API, and the ``media`` queue retrying fast."""
    import services.media_fetcher as service

    original = service.fetcher.settings
    service.fetcher.settings = settings.model_copy(update={"meta_graph_url": fake_meta})
    service.fetcher._context, service.fetcher._lock = None, None
    [retry] = [m for m in broker.middleware if isinstance(m, RetryMiddleware)]
    saved = retry.policies.get(contracts.MEDIA)
    retry.policies[contracts.MEDIA] = FAST_MEDIA
    yield service.fetcher
    retry.policies[contracts.MEDIA] = saved if saved is not None else FAST_MEDIA
    if saved is None:
        retry.policies.pop(contracts.MEDIA)
    service.fetcher.settings = original
    service.fetcher._context, service.fetcher._lock = None, None


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_an_inbound_image_is_fetched_checked_and_stored_by_the_worker(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str, fetcher: Any, worker: dramatiq.Worker
) -> None:
    # Given a user's image on Meta and its webhook stored at the edge
    media = register(fake_meta)
    wamid = f"wamid.{uuid.uuid4().hex}"
    image = {"mime_type": "image/jpeg", "sha256": media["sha256"], "id": media["id"], "caption": "look"}
    body = f.dumps(
        f.meta_payload(f.meta_change(numbers.phone_number_id, messages=[f.meta_message(wamid, "image", image)]))
    )
    webhook_id = f.webhook_row(db, body)
    # When the ingest worker processes it (which enqueues the media job) and the media worker runs
    contracts.PROCESS_WEBHOOK.send(contracts.ProcessWebhook(webhook_id))
    wait_for(lambda: stored_by_wamid(db, wamid) is not None, "the stored media")
    # Then the message row carries the stored file's id, MIME type, size and hash
    message_id = f.message_by_external_id(db, wamid).id
    kept = stored(db, message_id)
    assert kept is not None
    assert kept["mime_type"] == "image/jpeg" and kept["size"] == media["size"] and kept["sha256"] == media["sha256"]
    # And the file is the user's, byte for byte, and one message.media event says so
    assert hashlib.sha256(file_bytes(settings, kept["id"])).hexdigest() == media["sha256"]
    [event] = media_events(db, message_id)
    DATA_MODELS["message.media"].model_validate(event)  # the published schema holds
    assert event["media"] == kept and event["type"] == "image" and event["external_id"] == wamid


def test_a_hash_mismatch_is_retried_by_policy_and_then_stored(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str, fetcher: Any, worker: dramatiq.Worker
) -> None:
    # Given a download that serves corrupted bytes once
    media = register(fake_meta)
    message_id = inbound_image(db, numbers, media)
    httpx.post(f"{fake_meta}/_fake/media/config", json={"corrupt_next": 1}).raise_for_status()
    # When the media job runs
    contracts.FETCH_MEDIA.send(contracts.FetchMedia(message_id))
    wait_for(lambda: stored(db, message_id) is not None, "the stored media")
    # Then the first download was refused, the retry downloaded again, and the right file is kept
    assert httpx.get(f"{fake_meta}/_fake/media/downloads").json()["downloads"] == 2
    kept = stored(db, message_id)
    assert kept is not None and kept["sha256"] == media["sha256"]
    assert hashlib.sha256(file_bytes(settings, kept["id"])).hexdigest() == media["sha256"]


def test_a_hash_other_than_the_webhooks_is_refused(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str
) -> None:
    # Given a webhook whose sha256 is not the file's
    media = register(fake_meta)
    message_id = inbound_image(db, numbers, media, sha256=hashlib.sha256(b"other").hexdigest())
    # Then the fetch is refused as an integrity error (transient: retried), and nothing is kept
    with pytest.raises(MediaIntegrityError) as caught:
        fetch(settings, fake_meta, message_id)
    assert isinstance(caught.value, TransientError)
    assert stored(db, message_id) is None


def test_an_expired_url_is_asked_again(db: Database, settings: Settings, numbers: Numbers, fake_meta: str) -> None:
    # Given URLs that have expired by the time they are used
    media = register(fake_meta)
    message_id = inbound_image(db, numbers, media)
    httpx.post(f"{fake_meta}/_fake/media/config", json={"url_ttl_s": -1}).raise_for_status()
    # Then the fetch fails as transient (the retry resolves a new URL)
    with pytest.raises(MediaUrlExpiredError) as caught:
        fetch(settings, fake_meta, message_id)
    assert isinstance(caught.value, TransientError)
    # And with a fresh URL it succeeds
    httpx.post(f"{fake_meta}/_fake/media/config", json={"url_ttl_s": 300}).raise_for_status()
    assert fetch(settings, fake_meta, message_id) is not None


def test_running_the_job_twice_keeps_one_file_and_one_event(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str
) -> None:
    media = register(fake_meta)
    message_id = inbound_image(db, numbers, media)
    first = fetch(settings, fake_meta, message_id)
    second = fetch(settings, fake_meta, message_id)
    assert first is not None and first == second
    assert httpx.get(f"{fake_meta}/_fake/media/downloads").json()["downloads"] == 1
    with db.session() as session:
        assert session.execute(text("SELECT count(*) FROM media")).scalar_one() == 1
    assert len(media_events(db, message_id)) == 1


def test_a_file_larger_than_kept_is_refused_for_good(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str
) -> None:
    media = register(fake_meta, size=4096)
    message_id = inbound_image(db, numbers, media)

    async def go() -> None:
        ctx = await fetch_context(settings, fake_meta)
        ctx.max_bytes = 1024
        try:
            await fetch_inbound(ctx, message_id)
        finally:
            await close_context(ctx)

    with pytest.raises(MediaTooLargeError) as caught:
        run(go())
    assert isinstance(caught.value, PermanentError)


def test_a_baileys_file_comes_from_the_bridge_base64_export(
    db: Database, settings: Settings, numbers: Numbers, fake_evolution: str
) -> None:
    # Given a voice note the bridge holds, and its messages.upsert
    audio = b"OggS" + bytes(range(256)) * 100
    key_id = f"3EB0{uuid.uuid4().hex[:16].upper()}"
    httpx.post(
        f"{fake_evolution}/_fake/bridge-media",
        json={
            "key_id": key_id,
            "mimetype": "audio/ogg; codecs=opus",
            "data_b64": base64.b64encode(audio).decode(),
            "mediaType": "audioMessage",
        },
    ).raise_for_status()
    data = {
        "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": key_id},
        "pushName": "Maria",
        "message": {
            "audioMessage": {"url": "https://mmg.whatsapp.net/x.enc", "mimetype": "audio/ogg; codecs=opus", "ptt": True}
        },
        "messageType": "audioMessage",
        "messageTimestamp": 1717000000,
    }
    body = f.dumps(f.evolution("messages.upsert", data, instance=DEFAULT_INSTANCE))
    outcome = process.process_webhook(db, f.webhook_row(db, body, source=WebhookSource.BAILEYS))
    assert outcome is not None
    [message_id] = outcome.media
    # When the media job runs
    media_id = fetch(settings, "http://unused", message_id)
    # Then the bridge's file is kept with its MIME type and hash
    kept = stored(db, message_id)
    assert kept is not None and kept["id"] == media_id
    assert kept["mime_type"] == "audio/ogg" and kept["size"] == len(audio)
    assert kept["sha256"] == hashlib.sha256(audio).hexdigest()
    assert file_bytes(settings, kept["id"]) == audio


def test_a_bridge_answering_garbage_costs_one_attempt(
    db: Database, settings: Settings, numbers: Numbers, fake_evolution: str
) -> None:
    key_id = f"3EB0{uuid.uuid4().hex[:16].upper()}"
    httpx.post(
        f"{fake_evolution}/_fake/bridge-media",
        json={"key_id": key_id, "mimetype": "image/jpeg", "data_b64": "", "garbage": True},
    ).raise_for_status()
    data = {
        "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": key_id},
        "message": {"imageMessage": {"mimetype": "image/jpeg"}},
        "messageType": "imageMessage",
        "messageTimestamp": 1717000000,
    }
    body = f.dumps(f.evolution("messages.upsert", data, instance=DEFAULT_INSTANCE))
    outcome = process.process_webhook(db, f.webhook_row(db, body, source=WebhookSource.BAILEYS))
    assert outcome is not None
    [message_id] = outcome.media
    with pytest.raises(ProviderPermanentError):
        fetch(settings, "http://unused", message_id)
    assert stored(db, message_id) is None


def test_hashes_are_compared_as_hex_or_base64() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert hash_matches(digest.hex(), digest.hex())
    assert hash_matches(digest.hex().upper(), digest.hex())
    assert hash_matches(base64.b64encode(digest).decode(), digest.hex())
    assert not hash_matches("nope", digest.hex())


def test_storage_is_local_by_default(settings: Settings) -> None:
    assert type(local_storage(settings)).__name__ == "LocalStorage"


def test_the_sweep_enqueues_lost_fetches_only(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str, broker: Any
) -> None:
    # Given three inbound images: one stored, one given up, one whose job was lost
    done, failed, lost = (inbound_image(db, numbers, register(fake_meta, size=1000)) for _ in range(3))
    fetch(settings, fake_meta, done)

    async def give_up_on(message_id: int) -> None:
        ctx = await fetch_context(settings, fake_meta)
        try:
            await give_up(ctx, message_id, MediaTooLargeError("too big"))
        finally:
            await close_context(ctx)

    run(give_up_on(failed))
    with db.session() as session:  # received a minute ago (the fixture's webhook timestamp is from 2025)
        session.execute(text("UPDATE messages SET created_at = now() - interval '1 minute'"))
    # When the sweep runs
    enqueued = sweep(db, broker.client, settings.redis_namespace, grace_seconds=0)
    # Then only the lost one gets a job again
    assert enqueued == 1
    [job] = [orjson.loads(raw) for raw in broker.client.hvals(f"{settings.redis_namespace}:{contracts.MEDIA}.msgs")]
    assert job["kwargs"] == {"message_id": lost}
    # And a message newer than the grace is left to its own job
    assert sweep(db, broker.client, settings.redis_namespace, grace_seconds=3600) == 0


def test_a_permanent_failure_is_noted_on_the_message(
    db: Database, settings: Settings, numbers: Numbers, fake_evolution: str, fetcher: Any, worker: dramatiq.Worker
) -> None:
    # Given a bridge that answers garbage for a message's file
    key_id = f"3EB0{uuid.uuid4().hex[:16].upper()}"
    httpx.post(
        f"{fake_evolution}/_fake/bridge-media",
        json={"key_id": key_id, "mimetype": "image/jpeg", "data_b64": "", "garbage": True},
    ).raise_for_status()
    data = {
        "key": {"remoteJid": "5511999999999@s.whatsapp.net", "fromMe": False, "id": key_id},
        "message": {"imageMessage": {"mimetype": "image/jpeg"}},
        "messageType": "imageMessage",
        "messageTimestamp": 1717000000,
    }
    body = f.dumps(f.evolution("messages.upsert", data, instance=DEFAULT_INSTANCE))
    outcome = process.process_webhook(db, f.webhook_row(db, body, source=WebhookSource.BAILEYS))
    assert outcome is not None
    [message_id] = outcome.media
    # When its media job runs (one attempt: the failure is permanent)
    contracts.FETCH_MEDIA.send(contracts.FetchMedia(message_id))

    def error() -> Any:
        with db.session() as session:
            payload = session.execute(text("SELECT payload FROM messages WHERE id = :id"), {"id": message_id}).scalar()
        return payload.get("media_error")

    wait_for(lambda: error() is not None, "the give-up note")
    # Then the message says why, and the sweep leaves it alone
    assert error().startswith("ProviderPermanentError")
    assert sweep(db, fetcher_broker().client, settings.redis_namespace, grace_seconds=0) == 0


def fetcher_broker() -> Any:
    return dramatiq.get_broker()
