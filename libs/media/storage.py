"""Where media bytes live: a local directory (``ZAPQ_MEDIA_DIR``) or an S3-compatible bucket (``ZAPQ_MEDIA_S3_*``).

Both store a finished spool file (:mod:`libs.media.spool`) under a key and stream it back in chunks: no file is
ever whole in memory. The S3 backend uses boto3 (its transfer manager uploads large files in parts) from worker
threads, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

from libs.media.errors import MediaNotFoundError
from libs.settings import Settings

#: Bytes read per chunk when a file is streamed out.
CHUNK_BYTES = 256 * 1024


class MediaStorage(Protocol):
    """A place to keep media files by key."""

    #: Directory for spool files (on the same file system as a local store, so a put is a rename).
    spool_dir: str

    async def put_file(self, key: str, path: str) -> None:
        """Keep the finished file at ``path`` under ``key`` (the file may be moved away)."""
        ...

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes under ``key`` in chunks; :class:`MediaNotFoundError` if there are none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing if absent)."""
        ...

    def close(self) -> None:
        """Release clients."""
        ...


def _safe(key: str) -> str:
    if not key or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(f"bad storage key {key!r}")
    return key


class LocalStorage:
    """Files under one directory (``<root>/<key>``); a put is an atomic rename from the spool directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.spool_dir = os.path.join(self.root, ".spool")

    def __repr__(self) -> str:
        return f"LocalStorage({self.root!r})"

    def path(self, key: str) -> str:
        """The file of ``key``."""
        return os.path.join(self.root, _safe(key))

    async def put_file(self, key: str, path: str) -> None:
        """Move ``path`` to the key's file."""
        target = self.path(key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(path, target)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        """The key's file in chunks."""
        try:
            handle = open(self.path(key), "rb")  # noqa: SIM115 - closed below, across awaits
        except FileNotFoundError:
            raise MediaNotFoundError(f"no stored file {key}") from None
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    async def delete(self, key: str) -> None:
        """Remove the key's file."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def close(self) -> None:
        """Nothing to release."""


class S3Storage:
    """Objects in one bucket of an S3-compatible store (AWS S3, MinIO, Ceph, …) through boto3."""

    def __init__(self, *, url: str, bucket: str, region: str, access_key: str, secret_key: str, spool_dir: str) -> None:
        import boto3  # imported here: processes on local storage never load botocore
        from botocore.config import Config

        self.bucket = bucket
        self.url = url
        self.spool_dir = spool_dir
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=url or None,
            region_name=region,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def __repr__(self) -> str:
        return f"S3Storage(url={self.url!r}, bucket={self.bucket!r})"

    async def put_file(self, key: str, path: str) -> None:
        """Upload ``path`` (in parts when large)."""
        await asyncio.to_thread(self._client.upload_file, path, self.bucket, _safe(key))

    async def read(self, key: str) -> AsyncIterator[bytes]:
        """The object in chunks, read from its response stream."""
        from botocore.exceptions import ClientError

        try:
            response = await asyncio.to_thread(self._client.get_object, Bucket=self.bucket, Key=_safe(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MediaNotFoundError(f"no stored object {key}") from None
            raise
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        """Remove the object."""
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket, Key=_safe(key))

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()


def storage_from_settings(settings: Settings) -> MediaStorage:
    """The media storage the settings name: S3 when ``media_s3_url`` is set, else ``media_dir``."""
    if settings.media_s3_url:
        return S3Storage(
            url=settings.media_s3_url,
            bucket=settings.media_s3_bucket,
            region=settings.media_s3_region,
            access_key=settings.media_s3_access_key,
            secret_key=settings.media_s3_secret_key,
            spool_dir=os.path.join(os.path.abspath(settings.media_dir), ".spool"),
        )
    return LocalStorage(settings.media_dir)
