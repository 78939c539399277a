"""The storage backends: a local directory and an S3-compatible bucket (moto's server over real HTTP) keep a
spooled file under a key and stream it back; the API works the same on S3; expired media are pruned."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from libs.api.app import create_app
from libs.db.engine import Database
from libs.media import actions
from libs.media.errors import MediaNotFoundError
from libs.media.spool import spool
from libs.media.storage import CHUNK_BYTES, LocalStorage, MediaStorage
from libs.settings import Settings
from tests.media.conftest import S3Endpoint, close_context, fetch_context, run

DATA = os.urandom(3 * CHUNK_BYTES + 123)


async def _round_trip(storage: MediaStorage, key: str) -> tuple[bytes, int]:
    with spool(storage.spool_dir, len(DATA)) as target:
        for start in range(0, len(DATA), 10_000):
            target.write(DATA[start : start + 10_000])
        target.close()
        assert target.sha256 == hashlib.sha256(DATA).hexdigest()
        await storage.put_file(key, target.path)
    chunks = [chunk async for chunk in storage.read(key)]
    return b"".join(chunks), max(len(c) for c in chunks)


async def _gone(storage: MediaStorage, key: str) -> bool:
    await storage.delete(key)
    try:
        [chunk async for chunk in storage.read(key)]
    except MediaNotFoundError:
        return True
    return False


def test_local_storage_round_trip_in_chunks(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    data, largest = run(_round_trip(storage, "7/ab/med_x"))
    assert data == DATA and largest <= CHUNK_BYTES
    assert run(_gone(storage, "7/ab/med_x"))
    assert os.listdir(storage.spool_dir) == []


def test_s3_storage_round_trip_in_chunks(s3: S3Endpoint, tmp_path: Path) -> None:
    storage = s3.storage(str(tmp_path / "spool"))
    data, largest = run(_round_trip(storage, "7/ab/med_y"))
    assert data == DATA and largest <= CHUNK_BYTES
    assert run(_gone(storage, "7/ab/med_y"))
    storage.close()


def test_storage_keys_cannot_leave_the_store(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    for key in ("../etc/passwd", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            storage.path(key)


def test_the_api_uploads_to_and_streams_from_s3(settings: Settings, db: Database, broker: Any, s3: S3Endpoint) -> None:
    # Given the API configured for the S3-compatible store
    on_s3 = settings.model_copy(
        update={
            "media_s3_url": s3.url,
            "media_s3_bucket": s3.bucket,
            "media_s3_access_key": "test",
            "media_s3_secret_key": "test",
        }
    )
    with TestClient(create_app(on_s3)) as api:
        api.headers["authorization"] = f"Bearer {settings.api_token}"
        company = api.post("/api/companies", json={"name": "S3 Co"}).json()
        pdf = b"%PDF-1.4\n" + DATA
        # When a document is uploaded and read back
        created = api.post(f"/api/media?company_id={company['id']}", files={"file": ("d.pdf", pdf, "application/pdf")})
        assert created.status_code == 201, created.text
        got = api.get(f"/api/media/{created.json()['id']}")
    # Then the bytes are the same, and they are in the bucket (not on local disk)
    assert got.status_code == 200 and got.content == pdf
    storage = s3.storage(settings.media_dir)
    listed = storage._client.list_objects_v2(Bucket=s3.bucket)["Contents"]
    assert [o["Size"] for o in listed] == [len(pdf)]
    storage.close()


def test_prune_deletes_expired_media_and_their_files(settings: Settings, db: Database, tmp_path: Path) -> None:
    from tests.ingest import factories as f

    company_id = f.company(db)
    storage = LocalStorage(str(tmp_path))

    async def keep(retention_days: int) -> dict[str, Any]:
        ctx = await fetch_context(settings, "http://unused", storage)
        try:
            with spool(storage.spool_dir, 100) as target:
                target.write(b"hello")
                row = await actions.keep(
                    ctx.pool,
                    storage,
                    target,
                    company_id=company_id,
                    direction="out",
                    mime_type="text/plain",
                    retention_days=retention_days,
                )
        finally:
            await close_context(ctx)
        assert row is not None
        return row

    # Given a file kept 1 day and one kept 90 days
    short, long = run(keep(1)), run(keep(90))
    # When the prune runs two days later
    deleted = actions.prune(db, storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    # Then only the first is gone, row and file
    assert deleted == 1
    assert not os.path.exists(storage.path(short["storage_key"]))
    assert os.path.exists(storage.path(long["storage_key"]))
    assert actions.prune(db, storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2)) == 0
