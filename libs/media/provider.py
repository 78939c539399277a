"""The providers' media endpoints: Meta's upload, resolve and download, and the Baileys bridge's base64 export.

Clients are passed in (``httpx.AsyncClient``); failures are translated here once — Meta's error bodies through
:func:`libs.providers.meta.map_meta_error`, network errors through ``map_transport_error`` — and a download URL
that no longer answers (Meta: 5 minutes) becomes :class:`MediaUrlExpiredError` (the retry asks for a new one).
Tokens never appear in ``repr`` or exceptions.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from libs.errors import ProviderPermanentError, ProviderTransientError
from libs.media.errors import MediaIntegrityError, MediaTooLargeError, MediaUrlExpiredError
from libs.media.spool import Spool
from libs.providers._http import excerpt, json_object, map_transport_error, redact
from libs.providers.baileys import map_bridge_error
from libs.providers.meta import map_meta_error

#: Statuses of a download URL that mean "ask for a new URL" (expired, or never valid for this token).
EXPIRED_URL_STATUSES = frozenset({403, 404, 410})
#: Base64 characters decoded per step (a multiple of 4): the decoded file is written in pieces.
B64_STEP = 4 * 64 * 1024


@dataclass(frozen=True, slots=True)
class ResolvedMedia:
    """Meta's answer to ``GET /{media-id}``: a short-lived URL and what the file is."""

    url: str
    mime_type: str
    sha256: str | None
    file_size: int | None


def _size(value: Any) -> int | None:
    """Meta sends ``file_size`` as a string (sometimes a number)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class MetaMediaClient:
    """Meta's media API for one access token."""

    def __init__(self, http: httpx.AsyncClient, *, graph_url: str, api_version: str, access_token: str) -> None:
        if not access_token:
            raise ValueError("access_token must not be empty")
        self._http = http
        self._token = access_token
        self.base = f"{graph_url.rstrip('/')}/{api_version}"
        self._auth = {"Authorization": f"Bearer {access_token}"}

    def __repr__(self) -> str:
        return f"MetaMediaClient(base={self.base!r})"

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(
                method, url, headers={**self._auth, **kwargs.pop("headers", {})}, **kwargs
            )
        except httpx.TransportError as exc:
            raise map_transport_error(exc, provider="meta") from exc
        if not response.is_success:
            raise redact(map_meta_error(response.status_code, response.content), self._token)
        return response

    async def upload(
        self, phone_number_id: str, chunks: AsyncIterator[bytes], *, size: int, mime_type: str, filename: str
    ) -> str:
        """``POST /{phone-number-id}/media`` (multipart, streamed from ``chunks``); Meta's media id."""
        boundary = uuid.uuid4().hex
        safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "") or "file"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="messaging_product"\r\n\r\nwhatsapp\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\n{mime_type}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
            f"Content-Type: {mime_type}\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            async for chunk in chunks:
                yield chunk
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        }
        response = await self._call("POST", f"{self.base}/{phone_number_id}/media", content=body(), headers=headers)
        media_id = (json_object(response.content) or {}).get("id")
        if not isinstance(media_id, str | int) or not str(media_id):
            raise ProviderTransientError(
                "meta media upload returned no id",
                provider="meta",
                http_status=response.status_code,
                details=excerpt(response.content),
            )
        return str(media_id)

    async def resolve(self, media_id: str, phone_number_id: str | None = None) -> ResolvedMedia:
        """``GET /{media-id}``: the download URL (valid 5 minutes), MIME type, SHA-256 and size."""
        params = {"phone_number_id": phone_number_id} if phone_number_id else None
        response = await self._call("GET", f"{self.base}/{media_id}", params=params)
        body = json_object(response.content) or {}
        url, mime = body.get("url"), body.get("mime_type")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or not isinstance(mime, str):
            raise ProviderTransientError(
                "meta media lookup returned no url",
                provider="meta",
                http_status=response.status_code,
                details=excerpt(response.content),
            )
        sha = body.get("sha256")
        return ResolvedMedia(
            url=url,
            mime_type=mime,
            sha256=sha if isinstance(sha, str) else None,
            file_size=_size(body.get("file_size")),
        )

    async def download(self, url: str, target: Spool, *, declared_size: int | None) -> None:
        """Stream the file at ``url`` (with the token) into ``target``: :class:`MediaUrlExpiredError` when the
        URL no longer answers, :class:`MediaIntegrityError` past the declared size."""
        try:
            async with self._http.stream("GET", url, headers=self._auth) as response:
                if response.status_code in EXPIRED_URL_STATUSES:
                    raise MediaUrlExpiredError(f"the media URL answered {response.status_code}: ask for a new one")
                if not response.is_success:
                    await response.aread()
                    raise redact(map_meta_error(response.status_code, response.content), self._token)
                length = response.headers.get("content-length", "")
                if declared_size is not None and length.isdigit() and int(length) != declared_size:
                    raise MediaIntegrityError(f"the download is {length} bytes, Meta declared {declared_size}")
                try:
                    async for chunk in response.aiter_raw():
                        target.write(chunk)
                except MediaTooLargeError:
                    if declared_size is None:
                        raise
                    raise MediaIntegrityError(f"the download exceeds the declared {declared_size} bytes") from None
        except httpx.TransportError as exc:
            raise map_transport_error(exc, provider="meta") from exc


@dataclass(frozen=True, slots=True)
class BridgeMedia:
    """What the bridge said about an exported file."""

    mime_type: str
    filename: str | None


async def bridge_base64(
    http: httpx.AsyncClient, *, base_url: str, instance: str, api_key: str, key_id: str, target: Spool
) -> BridgeMedia:
    """Evolution ``POST /chat/getBase64FromMediaMessage/{instance}`` for message ``key_id``: the decoded file
    written to ``target``. A garbage answer is :class:`ProviderPermanentError` (one bounded attempt)."""
    payload = {"message": {"key": {"id": key_id}}, "convertToMp4": False}
    try:
        response = await http.post(
            f"{base_url.rstrip('/')}/chat/getBase64FromMediaMessage/{instance}",
            content=orjson.dumps(payload),
            headers={"apikey": api_key, "Content-Type": "application/json"},
        )
    except httpx.TransportError as exc:
        raise map_transport_error(exc, provider="baileys") from exc
    if not response.is_success:
        raise redact(map_bridge_error(response.status_code, response.content), api_key)
    body = json_object(response.content) or {}
    data, mime = body.get("base64"), body.get("mimetype")
    if not isinstance(data, str) or not data or not isinstance(mime, str):
        raise ProviderPermanentError(
            "the bridge returned no media",
            provider="baileys",
            http_status=response.status_code,
            details=excerpt(response.content),
        )
    data = data.strip()
    try:
        for start in range(0, len(data), B64_STEP):
            target.write(base64.b64decode(data[start : start + B64_STEP], validate=True))
    except (binascii.Error, ValueError):
        raise ProviderPermanentError("the bridge returned invalid base64", provider="baileys") from None
    name = body.get("fileName")
    return BridgeMedia(
        mime_type=mime.split(";", 1)[0].strip().lower(), filename=name if isinstance(name, str) else None
    )
