"""``/api/media``: upload a file to send by id, and read back any stored file (uploads and inbound media)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
from python_multipart.exceptions import MultipartParseError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from libs.api.access import check_row, company_filter
from libs.api.http import ApiError, body_chunks, context, json_response, query_id
from libs.api.multipart import Upload, boundary_of, read_upload
from libs.media import actions, limits, store
from libs.media.errors import MediaNotFoundError, MediaRefusedError
from libs.media.spool import spool

#: Room for the multipart framing (boundaries, part headers, small fields) above the largest file.
FRAMING_BYTES = 64 * 1024


def _limit(upload: Upload) -> int:
    """The file part's limit, from its declared type (415 before any of its bytes for a refused type)."""
    return limits.limit_for(upload.mime_type).max_bytes


async def upload_media(request: Request) -> Response:
    """``POST /api/media?company_id=…``: a ``multipart/form-data`` body with one ``file`` part (its
    ``Content-Type`` is the file's MIME type). Streamed to storage; refused with 415 (a type Meta does not
    take, or bytes not of that type) or 413 (over the type's limit: image 5 MB, video/audio 16 MB, document
    100 MB, sticker 100 KB static / 500 KB animated) before anything is kept. Answers the file's id
    (``med_…``, usable as a media ``id`` in sends), MIME type, size and SHA-256."""
    company_id = company_filter(request, query_id(request, "company_id"))
    if company_id is None:
        raise ApiError(400, "company_id is required (query string)")
    boundary = boundary_of(request.headers.get("content-type", ""))
    ctx = context(request)
    storage = ctx.media_storage
    try:
        with spool(storage.spool_dir, limits.LARGEST) as target:
            upload = await read_upload(body_chunks(request, limits.LARGEST + FRAMING_BYTES), boundary, target, _limit)
            mime = limits.normalize(upload.mime_type)
            limits.check_bytes(mime, target.head, target.size)
            if target.size == 0:
                raise ApiError(400, "the file is empty")
            row = await actions.keep(
                ctx.pool,
                storage,
                target,
                company_id=company_id,
                direction="out",
                mime_type=mime,
                filename=upload.filename,
                retention_days=ctx.settings.media_retention_days,
            )
    except MediaRefusedError as exc:
        raise ApiError(exc.status, str(exc)) from None
    except MultipartParseError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    except psycopg.errors.ForeignKeyViolation:
        raise ApiError(404, f"no company {company_id}") from None
    assert row is not None  # an upload has no message: nothing to conflict with
    return json_response(actions.public(row), 201)


async def get_media(request: Request) -> Response:
    """``GET /api/media/{id}``: the stored file, streamed, with its MIME type, size and SHA-256 (``ETag``)."""
    media_id = request.path_params["id"]
    if not actions.is_media_id(media_id):
        raise ApiError(404, f"no media {media_id}")
    ctx = context(request)
    async with ctx.pool.connection() as conn:
        row = await store.get(conn, media_id)
    check_row(request, row, "media", media_id)
    assert row is not None
    chunks = ctx.media_storage.read(row["storage_key"])
    try:
        first = await anext(chunks, b"")
    except MediaNotFoundError:
        raise ApiError(404, f"media {media_id} is no longer stored") from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    headers = {"content-length": str(row["size"]), "etag": f'"{row["sha256"]}"', "x-content-sha256": row["sha256"]}
    if row["filename"]:
        safe = row["filename"].replace('"', "").replace("\\", "")
        headers["content-disposition"] = f'attachment; filename="{safe.encode("ascii", "replace").decode()}"'
    return StreamingResponse(body(), media_type=row["mime_type"], headers=headers)
