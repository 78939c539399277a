"""Sending by zapq media id (``libs.sending.media_ref.resolve_media``): the file is uploaded to Meta once per
connection and Meta's id reused while it lives; a bridge gets the file inline; other references pass through."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from libs.db.engine import Database, async_pool
from libs.db.models import Connection
from libs.media import actions
from libs.media.errors import MediaNotFoundError
from libs.media.runtime import media_http_client
from libs.media.spool import spool
from libs.secrets import Secrets
from libs.sending.media_ref import MediaResolver, resolve_media
from libs.settings import Settings
from tests.media.conftest import Numbers, add_company, local_storage, run

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 64


def connection_row(db: Database, connection_id: int) -> dict[str, Any]:
    """The columns a claimed send carries about its connection."""
    with db.session() as session:
        c = session.get(Connection, connection_id)
        assert c is not None
        return {
            "company_id": c.company_id,
            "connection_id": c.id,
            "provider": str(c.provider),
            "phone_number_id": c.phone_number_id,
            "access_token": c.access_token,
        }


async def _with_resolver(settings: Settings, graph_url: str, work: Any) -> Any:
    pool = async_pool(settings)
    await pool.open()
    resolver = MediaResolver(
        pool=pool,
        http=media_http_client(),
        storage=local_storage(settings),
        secrets=Secrets(settings.secrets_key_list),
        graph_url=graph_url,
        api_version=settings.meta_api_version,
    )
    try:
        return await work(resolver)
    finally:
        await resolver.http.aclose()
        await pool.close()


def upload(settings: Settings, company_id: int, data: bytes = PDF) -> str:
    """A file kept as if uploaded through the API; its ``med_…`` id."""

    async def work(resolver: MediaResolver) -> str:
        with spool(resolver.storage.spool_dir, len(data)) as target:
            target.write(data)
            row = await actions.keep(
                resolver.pool,
                resolver.storage,
                target,
                company_id=company_id,
                direction="out",
                mime_type="application/pdf",
                filename="invoice.pdf",
                retention_days=90,
            )
        assert row is not None
        return str(row["id"])

    return str(run(_with_resolver(settings, "http://unused", work)))


def resolve(settings: Settings, graph_url: str, ref: dict[str, Any], connection: dict[str, Any]) -> dict[str, Any]:
    async def work(resolver: MediaResolver) -> dict[str, Any]:
        return await resolve_media(ref, connection, resolver=resolver)

    return dict(run(_with_resolver(settings, graph_url, work)))


def uploads(meta_url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{meta_url}/_fake/media/uploads").json())


def test_a_file_is_uploaded_once_per_connection_and_its_id_reused(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str
) -> None:
    # Given an uploaded PDF
    media_id = upload(settings, numbers.company_id)
    meta = connection_row(db, numbers.meta_id)
    # When it is sent by id twice on the Meta connection
    first = resolve(settings, fake_meta, {"id": media_id, "filename": "invoice.pdf"}, meta)
    second = resolve(settings, fake_meta, {"id": media_id, "filename": "invoice.pdf"}, meta)
    # Then Meta received it once (multipart, the file's bytes and type), and both sends use Meta's id
    [sent] = uploads(fake_meta)
    assert sent["phone_number_id"] == numbers.phone_number_id and sent["mime_type"] == "application/pdf"
    assert sent["sha256"] == hashlib.sha256(PDF).hexdigest() and sent["filename"] == "invoice.pdf"
    assert first == second == {"id": sent["id"], "filename": "invoice.pdf"}
    # And the id is cached on the media row with its 30-day expiry
    with db.session() as session:
        cached = session.execute(text("SELECT provider_ids FROM media WHERE id = :id"), {"id": media_id}).scalar_one()
    entry = cached[str(numbers.meta_id)]
    expires = dt.datetime.fromisoformat(entry["expires_at"])
    assert entry["id"] == sent["id"] and dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(
        days=30
    )


def test_another_connection_uploads_its_own_copy(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str, fake_evolution: str
) -> None:
    media_id = upload(settings, numbers.company_id)
    with db.session() as session:
        other = Connection(
            company_id=numbers.company_id,
            provider="meta",
            status="active",
            phone_number_id="pn-other",
            access_token=Secrets(settings.secrets_key_list).encrypt("fake-meta-token"),
        )
        session.add(other)
        session.flush()
        other_id = other.id
    a = resolve(settings, fake_meta, {"id": media_id}, connection_row(db, numbers.meta_id))
    b = resolve(settings, fake_meta, {"id": media_id}, connection_row(db, other_id))
    assert a["id"] != b["id"]
    assert [u["phone_number_id"] for u in uploads(fake_meta)] == [numbers.phone_number_id, "pn-other"]


def test_concurrent_sends_upload_once(db: Database, settings: Settings, numbers: Numbers, fake_meta: str) -> None:
    media_id = upload(settings, numbers.company_id)
    meta = connection_row(db, numbers.meta_id)

    async def work(resolver: MediaResolver) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(resolve_media({"id": media_id}, meta, resolver=resolver) for _ in range(5))))

    results = run(_with_resolver(settings, fake_meta, work))
    assert len(uploads(fake_meta)) == 1
    assert len({r["id"] for r in results}) == 1


def test_an_expiring_cached_id_is_replaced(db: Database, settings: Settings, numbers: Numbers, fake_meta: str) -> None:
    media_id = upload(settings, numbers.company_id)
    meta = connection_row(db, numbers.meta_id)
    first = resolve(settings, fake_meta, {"id": media_id}, meta)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    with db.session() as session:
        session.execute(
            text(
                "UPDATE media SET provider_ids = jsonb_set(provider_ids, ARRAY[:c, 'expires_at'], "
                "to_jsonb(CAST(:at AS text)))"
            ),
            {"c": str(numbers.meta_id), "at": soon},
        )
    second = resolve(settings, fake_meta, {"id": media_id}, meta)
    assert first["id"] != second["id"] and len(uploads(fake_meta)) == 2


def test_a_bridge_gets_the_file_inline(db: Database, settings: Settings, numbers: Numbers) -> None:
    media_id = upload(settings, numbers.company_id)
    bridge = {"company_id": numbers.company_id, "connection_id": numbers.bridge_id, "provider": "baileys"}
    resolved = resolve(settings, "http://unused", {"id": media_id, "caption": "your invoice"}, bridge)
    assert base64.b64decode(resolved.pop("base64")) == PDF
    assert resolved == {"caption": "your invoice", "mime_type": "application/pdf", "filename": "invoice.pdf"}


def test_other_references_pass_through_and_foreign_ids_are_refused(
    db: Database, settings: Settings, numbers: Numbers, fake_meta: str, fake_evolution: str
) -> None:
    meta = connection_row(db, numbers.meta_id)
    for ref in ({"link": "https://x.io/a.pdf"}, {"id": "1013859600285441"}):
        assert run(resolve_media(ref, meta)) == ref
    # Another company's file is not found (as an unknown id); so is a pruned one
    other = add_company(db, settings, fake_meta, fake_evolution, name="Other")
    foreign = upload(settings, other.company_id)
    with pytest.raises(MediaNotFoundError):
        resolve(settings, fake_meta, {"id": foreign}, meta)
    with pytest.raises(MediaNotFoundError):
        resolve(settings, fake_meta, {"id": "med_" + "0" * 32}, meta)
    assert uploads(fake_meta) == []
