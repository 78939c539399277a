"""Bearer-token authentication for every route but the open ones (health checks and static shells)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from libs.api.http import error_response
from libs.whatsapp.signature import verify_shared_secret


class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer <token>`` (constant-time compare) or 401."""

    def __init__(self, app: ASGIApp, *, token: str, open_paths: frozenset[str]) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let open paths and non-HTTP scopes through; check the token on everything else."""
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not verify_shared_secret(given.strip(), self.token):
            response = error_response(401, "missing or invalid bearer token")
            response.headers["www-authenticate"] = 'Bearer realm="zapq"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
