"""The public webhook edge (ASGI): authenticate, validate, store durably, answer, then enqueue.

* ``GET /webhooks/meta``: Meta's verification handshake.
* ``POST /webhooks/meta``: ``X-Hub-Signature-256`` over the raw bytes (401), size (413), JSON and
  ``object`` (400); 200 only once the raw body is committed in Postgres (503 if it cannot be); the job is
  enqueued after the answer — if Redis is down then, the outbox sweep enqueues it later.
* ``POST /webhooks/baileys/{key}``: Evolution API events of one connection, authenticated by that
  connection's own secret (header ``x-zapq-secret``, stored encrypted); the body must name that connection's
  instance (401 otherwise), so a bridge's secret can never speak for another company's instance.
* ``POST /webhooks/baileys``: the migration path — authenticated by the global shared secret, only while
  ``ZAPQ_BAILEYS_WEBHOOK_SECRET`` is set (401 once it is unset), and only for instances whose connection has
  no secret of its own (401 for one that has: it is reached through its own URL only).

Nothing is stored or enqueued for a request that is rejected.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from libs.connections import store as connections
from libs.db.engine import async_pool
from libs.ingest.batcher import WebhookWriter
from libs.jsontext import NotJsonError, loads_keeping_surrogates
from libs.redis_clients import async_redis_client
from libs.secrets import CannotDecryptError, Secrets
from libs.settings import Settings
from libs.tracing import enabled, span
from libs.whatsapp.signature import verify_meta_signature, verify_shared_secret

logger = logging.getLogger(__name__)

META_OBJECT = "whatsapp_business_account"


class BodyTooLarge(Exception):
    """The request body is over the configured limit."""


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class WebhookEdge:
    """Request handlers holding the process's Postgres pool and Redis client (opened in the lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: AsyncConnectionPool | None = None
        self.redis: aioredis.Redis | None = None
        self.writer: WebhookWriter | None = None
        self.secrets = Secrets(settings.secrets_key_list)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the pool and the Redis client for the app's lifetime."""
        # After a Postgres outage a broken connection is replaced on checkout instead of answering 503, and
        # reconnection gives up after a few seconds (and starts afresh on the next request) instead of backing
        # off for minutes, which kept answering 503 long after Postgres was back.
        self.pool = async_pool(self.settings, min_size=2, timeout=3.0, connect_timeout=3, check_on_checkout=True)
        await self.pool.open(wait=False)
        self.redis = async_redis_client(self.settings, connect_timeout=2, timeout=5)
        self.writer = WebhookWriter(self.pool, self.redis, self.settings.redis_namespace)
        try:
            yield
        finally:
            await self.writer.close()
            await self.redis.aclose()
            await self.pool.close()

    async def verify(self, request: Request) -> Response:
        """Meta's GET handshake: echo ``hub.challenge`` when mode and token match."""
        params = request.query_params
        token = params.get("hub.verify_token", "")
        if params.get("hub.mode") != "subscribe" or not verify_shared_secret(token, self.settings.meta_verify_token):
            return _error(403, "verification failed: wrong hub.mode or hub.verify_token")
        challenge = params.get("hub.challenge")
        if not challenge:
            return _error(400, "hub.challenge is missing")
        return PlainTextResponse(challenge)

    async def meta(self, request: Request) -> Response:
        """Accept a Meta webhook POST."""
        try:
            body = await _read_body(request, self.settings.webhook_max_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {self.settings.webhook_max_bytes} bytes")
        if not verify_meta_signature(body, request.headers.get("x-hub-signature-256"), self.settings.meta_app_secret):
            return _error(401, "missing or invalid X-Hub-Signature-256")
        try:
            payload = loads_keeping_surrogates(body)  # lone surrogates are stored; the worker replaces them
        except NotJsonError:
            return _error(400, "body is not valid JSON")
        if not isinstance(payload, dict) or payload.get("object") != META_OBJECT:
            return _error(400, f"object must be {META_OBJECT!r}")
        return await self._accept("meta", body, request)

    async def baileys(self, request: Request) -> Response:
        """Accept an Evolution API (Baileys bridge) webhook POST with the global secret (the migration path:
        refused once ``ZAPQ_BAILEYS_WEBHOOK_SECRET`` is unset)."""
        header = self.settings.baileys_secret_header
        if not self.settings.baileys_webhook_secret:
            return _error(401, "the global Baileys secret is retired: post to the connection's /webhooks/baileys/{key}")
        if not verify_shared_secret(request.headers.get(header), self.settings.baileys_webhook_secret):
            return _error(401, f"missing or invalid {header} header")
        parsed = await self._baileys_body(request)
        if isinstance(parsed, Response):
            return parsed
        body, payload = parsed
        instance = payload.get("instance")
        if isinstance(instance, str):
            assert self.pool is not None
            try:
                async with self.pool.connection() as conn:
                    own = await connections.baileys_has_own_secret(conn, instance)
            except Exception:
                logger.warning("could not look a Baileys instance up; answering 503", exc_info=True)
                return _error(503, "storage unavailable, retry later")
            if own:
                return _error(
                    401, "this instance has its own webhook URL and secret: the global secret is not accepted"
                )
        return await self._accept("baileys", body, request)

    async def baileys_connection(self, request: Request) -> Response:
        """Accept an Evolution API webhook POST on one connection's own URL, with that connection's secret, for
        that connection's instance only."""
        header = self.settings.baileys_secret_header
        given = request.headers.get(header)
        refused = _error(401, f"missing or invalid {header} header for this webhook URL")
        if not given:
            return refused
        assert self.pool is not None
        try:
            async with self.pool.connection() as conn:
                found = await connections.baileys_by_webhook_key(conn, request.path_params["key"])
        except Exception:
            logger.warning("could not look a Baileys webhook URL up; answering 503", exc_info=True)
            return _error(503, "storage unavailable, retry later")
        if found is None:
            return refused
        connection_id, instance, stored = found
        if stored is None:
            return refused
        try:
            expected = self.secrets.decrypt(stored)
        except CannotDecryptError:
            logger.error("the webhook secret of connection %s cannot be decrypted (ZAPQ_SECRETS_KEYS)", connection_id)
            return _error(503, "cannot verify this webhook now, retry later")
        if not verify_shared_secret(given, expected):
            return refused
        parsed = await self._baileys_body(request)
        if isinstance(parsed, Response):
            return parsed
        body, payload = parsed
        if payload.get("instance") != instance:
            return _error(401, "the body names another instance than this webhook URL's connection")
        return await self._accept("baileys", body, request)

    async def _baileys_body(self, request: Request) -> tuple[bytes, dict[str, Any]] | Response:
        """The body and its JSON of an Evolution API event, or the 4xx answer refusing it."""
        try:
            body = await _read_body(request, self.settings.webhook_max_bytes)
        except BodyTooLarge:
            return _error(413, f"body larger than {self.settings.webhook_max_bytes} bytes")
        try:
            payload = loads_keeping_surrogates(body)  # lone surrogates are stored; the worker replaces them
        except NotJsonError:
            return _error(400, "body is not valid JSON")
        if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
            return _error(400, "an Evolution API event needs a string 'event'")
        return body, payload

    async def _accept(self, source: str, body: bytes, request: Request) -> Response:
        with span(f"POST /webhooks/{source}", headers=request.headers if enabled() else None, server=True):
            return await self._store(source, body)

    async def _store(self, source: str, body: bytes) -> Response:
        assert self.writer is not None
        try:
            accepted = await self.writer.accept(source, body)
        except Exception:
            logger.warning("could not store a %s webhook; answering 503 so it is redelivered", source, exc_info=True)
            return _error(503, "storage unavailable, retry later")
        if accepted.webhook_id is None:
            return JSONResponse({"status": "duplicate"})
        return JSONResponse({"status": "accepted", "id": accepted.webhook_id})

    async def health(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})


def create_app(settings: Settings) -> Starlette:
    """The webhook-ingest ASGI app for ``settings``."""
    edge = WebhookEdge(settings)
    routes: list[Any] = [
        Route("/webhooks/meta", edge.verify, methods=["GET"]),
        Route("/webhooks/meta", edge.meta, methods=["POST"]),
        Route("/webhooks/baileys", edge.baileys, methods=["POST"]),
        Route("/webhooks/baileys/{key}", edge.baileys_connection, methods=["POST"]),
        Route("/healthz", edge.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=edge.lifespan)
    app.state.edge = edge
    return app
