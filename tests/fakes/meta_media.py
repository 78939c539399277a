"""Meta's media API for the fake Meta server (:mod:`tests.fakes.meta`): upload, lookup, download.

* ``POST /{version}/{phone_number_id}/media`` (multipart ``messaging_product``, ``type``, ``file``) → ``{"id"}``;
  every upload is recorded (``GET /_fake/media/uploads``).
* ``GET /{version}/{media_id}`` → ``{"messaging_product", "url", "mime_type", "sha256", "file_size", "id"}``
  (``file_size`` a string, as Meta sends it; ``sha256`` hex); the URL is valid ``url_ttl_s`` (Meta: 300 s).
* ``GET /_media/{media_id}?exp=…`` (the URL) → the bytes with ``Content-Type``, behind the Bearer token (401);
  past its expiry → 404 (ask for a new URL). ``corrupt_next`` downloads serve other bytes of the same size (a
  hash mismatch); every answer waits the fake's ``latency_ms``.
* Control: ``POST /_fake/media`` ``{"id", "mime_type", "data_b64"}`` or ``{"id", "mime_type", "size"}`` (that many
  pseudo-random bytes, ``seed`` optional) registers a file as if a user had sent it; ``POST /_fake/media/config``
  ``{"url_ttl_s"?, "corrupt_next"?, "reset"?}``
  (``reset``: forget files, uploads and the download count); ``GET /_fake/media/uploads``;
  ``GET /_fake/media/downloads`` (count).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import meta_wire as wire

#: Meta's download URLs live 5 minutes.
URL_TTL_S = 300.0


@dataclass
class StoredFile:
    """One file the fake holds (uploaded, or registered as a user's)."""

    id: str
    mime_type: str
    data: bytes
    phone_number_id: str | None = None
    filename: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class MetaMediaFake:
    """The media state of one fake Meta server."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    uploads: list[dict[str, Any]] = field(default_factory=list)
    url_ttl_s: float = URL_TTL_S
    corrupt_next: int = 0
    downloads: int = 0
    _next_id: int = 1_000_000_000_000_000

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def register(self, media_id: str, mime_type: str, data: bytes) -> StoredFile:
        """A file as if a WhatsApp user had sent it."""
        stored = self.files[media_id] = StoredFile(media_id, mime_type, data)
        return stored


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth[:7].lower() == "bearer " else ""


def media_routes(media: MetaMediaFake, fake: Any) -> list[Route]:
    """The media routes, checking tokens and waiting latency as ``fake`` (a :class:`~tests.fakes.meta.MetaFake`)."""

    async def latency() -> None:
        if fake.config.latency_ms > 0:
            await asyncio.sleep(fake.config.latency_ms / 1000)

    def unauthorised() -> Response:
        return JSONResponse(wire.error_envelope(190), status_code=401)

    async def upload(request: Request) -> Response:
        if _token(request) not in fake.config.valid_tokens:
            return unauthorised()
        form = await request.form(max_part_size=200 * 1024 * 1024)
        part = form.get("file")
        if form.get("messaging_product") != "whatsapp" or part is None or isinstance(part, str):
            return JSONResponse(
                wire.error_envelope(100, details="messaging_product and file are required"), status_code=400
            )
        data = await part.read()
        mime = str(form.get("type") or part.content_type or "")
        stored = StoredFile(media.new_id(), mime, data, request.path_params["phone_number_id"], part.filename)
        media.files[stored.id] = stored
        media.uploads.append(
            {
                "id": stored.id,
                "phone_number_id": stored.phone_number_id,
                "mime_type": mime,
                "size": len(data),
                "sha256": stored.sha256,
                "filename": part.filename,
            }
        )
        await latency()
        return JSONResponse({"id": stored.id})

    async def lookup(request: Request) -> Response:
        if _token(request) not in fake.config.valid_tokens:
            return unauthorised()
        stored = media.files.get(request.path_params["media_id"])
        await latency()
        if stored is None:
            return JSONResponse(wire.error_envelope(100, details="media not found"), status_code=400)
        expires = time.time() + media.url_ttl_s
        url = f"{request.base_url}_media/{stored.id}?exp={expires:.3f}"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "url": url,
                "mime_type": stored.mime_type,
                "sha256": stored.sha256,
                "file_size": str(len(stored.data)),
                "id": stored.id,
            }
        )

    async def download(request: Request) -> Response:
        if _token(request) not in fake.config.valid_tokens:
            return unauthorised()
        stored = media.files.get(request.path_params["media_id"])
        expires = float(request.query_params.get("exp") or 0)
        await latency()
        if stored is None or time.time() > expires:
            return Response(status_code=404)
        media.downloads += 1
        data = stored.data
        if media.corrupt_next > 0:
            media.corrupt_next -= 1
            data = bytes(b ^ 0xFF for b in data[:16]) + data[16:]

        return Response(data, media_type=stored.mime_type)

    async def register(request: Request) -> Response:
        body = await request.json()
        if "data_b64" in body:
            data = base64.b64decode(body["data_b64"])
        else:
            data = random.Random(body.get("seed", body["id"])).randbytes(int(body["size"]))
        stored = media.register(str(body["id"]), str(body["mime_type"]), data)
        return JSONResponse({"id": stored.id, "sha256": stored.sha256, "size": len(data)})

    async def configure(request: Request) -> Response:
        body = await request.json()
        if body.get("reset"):
            media.files.clear()
            media.uploads.clear()
            media.downloads = 0
        media.url_ttl_s = float(body.get("url_ttl_s", media.url_ttl_s))
        media.corrupt_next = int(body.get("corrupt_next", media.corrupt_next))
        return JSONResponse({"url_ttl_s": media.url_ttl_s, "corrupt_next": media.corrupt_next})

    async def uploads(request: Request) -> Response:
        return JSONResponse(media.uploads)

    async def downloads(request: Request) -> Response:
        return JSONResponse({"downloads": media.downloads})

    return [
        Route("/_fake/media", register, methods=["POST"]),
        Route("/_fake/media/config", configure, methods=["POST"]),
        Route("/_fake/media/uploads", uploads, methods=["GET"]),
        Route("/_fake/media/downloads", downloads, methods=["GET"]),
        Route("/_media/{media_id}", download, methods=["GET"]),
        Route("/{version}/{phone_number_id}/media", upload, methods=["POST"]),
        Route("/{version}/{media_id}", lookup, methods=["GET"]),
    ]
