"""Authentication of every route but the open ones: the bootstrap token or an API key, then its rate limit.

Who is calling (:class:`libs.access.keys.Principal`) is left in the request scope for the route guard
(:func:`libs.api.access.guarded`), which checks the route's scope and the company.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from libs.access.actions import Verifier
from libs.api.http import error_response
from libs.api.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

#: Where the caller is kept in the ASGI scope.
PRINCIPAL = "zapq.principal"
#: Failures of a dependency while checking a key: 503, as in the routes.
UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer <token or key>`` → the caller, or 401; a key over its rate → 429."""

    def __init__(self, app: ASGIApp, *, ctx: Any, open_paths: frozenset[str]) -> None:
        self.app = app
        self.ctx = ctx
        self.open_paths = open_paths
        settings = ctx.settings
        self.verifier = Verifier(settings.api_token, settings.api_key_cache_seconds)
        self.limiter = RateLimiter(settings.redis_namespace, settings.api_rate_per_second, settings.api_rate_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let open paths and non-HTTP scopes through; check the token (and the key's rate) on everything else."""
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        try:
            principal = (
                await self.verifier.principal(given.strip(), self.ctx.pool) if scheme.lower() == "bearer" else None
            )
            wait = None
            if principal is not None and principal.key_id is not None and self.limiter.enabled:
                wait = await self.limiter.retry_after(self.ctx.redis, principal.key_id)
        except UNAVAILABLE as exc:
            logger.warning("dependency unavailable while checking an API key", exc_info=exc)
            await error_response(503, f"a dependency is unavailable ({type(exc).__name__}); retry later")(
                scope, receive, send
            )
            return
        if principal is None:
            response = error_response(401, "missing or invalid bearer token")
            response.headers["www-authenticate"] = 'Bearer realm="zapq"'
            await response(scope, receive, send)
            return
        if wait is not None:
            response = error_response(429, f"rate limit of this API key reached; retry in {wait} s")
            response.headers["retry-after"] = str(wait)
            await response(scope, receive, send)
            return
        scope[PRINCIPAL] = principal
        await self.app(scope, receive, send)
