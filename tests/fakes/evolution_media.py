"""The bridge's media export for the fake Evolution API (:mod:`tests.fakes.evolution`).

``POST /chat/getBase64FromMediaMessage/{instance}`` ``{"message": {"key": {"id"}}, "convertToMp4": false}`` →
**201** ``{"mediaType", "fileName", "caption", "size": {"fileLength"}, "mimetype", "base64", "buffer": null}``
for a registered message, else 400 (as Evolution 2.3.6). Behind the ``apikey`` header (401). Control:
``POST /_fake/bridge-media`` ``{"key_id", "mimetype", "data_b64", "fileName"?, "mediaType"?}`` registers a
message's file; ``"garbage": true`` makes its export answer 201 with a body that is not the file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class BridgeMediaFake:
    """Registered message files (``key_id`` → the export's fields) and how many exports were asked."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: int = 0


def bridge_media_routes(media: BridgeMediaFake, fake: Any) -> list[Route]:
    """The export route (checking ``apikey`` and waiting latency as ``fake``) and its control route."""

    async def export(request: Request) -> Response:
        if request.headers.get("apikey") not in fake.config.api_keys:
            return JSONResponse({"status": 401, "error": "Unauthorized"}, status_code=401)
        body = await request.json()
        key_id = ((body.get("message") or {}).get("key") or {}).get("id")
        media.exports += 1
        if fake.config.latency_ms > 0:
            await asyncio.sleep(fake.config.latency_ms / 1000)
        entry = media.files.get(str(key_id))
        if entry is None:
            return JSONResponse(
                {"status": 400, "error": "Bad Request", "response": {"message": ["not found"]}}, status_code=400
            )
        if entry.get("garbage"):
            return JSONResponse({"mediaType": "imageMessage", "base64": None, "buffer": None}, status_code=201)
        return JSONResponse(
            {
                "mediaType": entry.get("mediaType", "imageMessage"),
                "fileName": entry.get("fileName", f"{key_id}.bin"),
                "caption": None,
                "size": {"fileLength": len(entry["data_b64"]) * 3 // 4},
                "mimetype": entry["mimetype"],
                "base64": entry["data_b64"],
                "buffer": None,
            },
            status_code=201,
        )

    async def register(request: Request) -> Response:
        body = await request.json()
        media.files[str(body["key_id"])] = body
        return JSONResponse({"ok": True})

    return [
        Route("/chat/getBase64FromMediaMessage/{instance}", export, methods=["POST"]),
        Route("/_fake/bridge-media", register, methods=["POST"]),
    ]
