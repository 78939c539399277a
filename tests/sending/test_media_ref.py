"""The sender's context resolves zapq media ids: its ``media`` resolver (built with the sender's pool and the
media storage) uploads a file to the fake Graph API once per connection, on the worker's event loop."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from libs.db.engine import Database
from libs.db.models import Connection
from libs.media import actions
from libs.media.spool import spool
from libs.sending.media_ref import resolve_media
from libs.sending.send import SenderContext
from tests.sending.conftest import make_connection, on_loop

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20


def test_the_sender_context_uploads_a_zapq_media_id_once(db: Database, context: SenderContext, fake_meta: str) -> None:
    # Given a Meta connection and a PNG uploaded to zapq (and a fake that has seen no upload)
    httpx.post(f"{fake_meta}/_fake/media/config", json={"reset": True}).raise_for_status()
    company_id, connection_id = make_connection(db, phone_number_id="pn-media")
    resolver = context.media
    assert resolver is not None

    async def keep() -> str:
        with spool(resolver.storage.spool_dir, len(PNG)) as target:
            target.write(PNG)
            row = await actions.keep(
                resolver.pool,
                resolver.storage,
                target,
                company_id=company_id,
                direction="out",
                mime_type="image/png",
                retention_days=90,
            )
        assert row is not None
        return str(row["id"])

    media_id = on_loop(keep())
    with db.session() as session:
        c = session.get(Connection, connection_id)
        assert c is not None
        row: dict[str, Any] = {
            "company_id": company_id,
            "connection_id": connection_id,
            "provider": "meta",
            "phone_number_id": c.phone_number_id,
            "access_token": c.access_token,
        }
    # When two sends resolve it
    first = on_loop(resolve_media({"id": media_id, "caption": "hi"}, row, resolver=resolver))
    second = on_loop(resolve_media({"id": media_id, "caption": "hi"}, row, resolver=resolver))
    # Then the fake received one upload with the file's bytes, and both sends carry Meta's id
    [upload] = httpx.get(f"{fake_meta}/_fake/media/uploads").json()
    assert upload["sha256"] == hashlib.sha256(PNG).hexdigest() and upload["phone_number_id"] == "pn-media"
    assert first == second == {"id": upload["id"], "caption": "hi"}
