"""Request/response plumbing shared by the API handlers: JSON in and out, typed errors, the app context."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import httpx
import orjson
import redis.asyncio as aioredis
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from libs.db.engine import Database, async_pool
from libs.events.client import EndpointClient
from libs.events.endpoints import Endpoints
from libs.events.feed import EventHub
from libs.events.kicks import Kicks
from libs.events.runtime import endpoint_http_client
from libs.jsontext import NotJsonError, loads_keeping_surrogates, nul_paths, surrogate_paths
from libs.media.storage import MediaStorage, storage_from_settings
from libs.outbound import AddressGuard
from libs.redis_clients import async_redis_client
from libs.secrets import Secrets
from libs.settings import Settings
from libs.templates.catalogue import TemplateCache
from libs.templates.graph import Graph, graph_client

M = TypeVar("M", bound=BaseModel)

#: Largest JSON body accepted.
MAX_JSON_BYTES = 1024 * 1024


class ApiError(Exception):
    """An answer other than success: HTTP status, a reason for humans, optional details."""

    def __init__(self, status: int, reason: str, details: Any = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.details = details


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` as JSON (datetimes as ISO 8601)."""
    try:
        body = orjson.dumps(data)
    except TypeError:  # an integer past 64 bits, which a client's JSON (template components) may hold
        body = json.dumps(data, default=_iso, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


def error_response(status: int, reason: str, details: Any = None) -> Response:
    """The one error shape: ``{"error": reason, "details": …}``."""
    body: dict[str, Any] = {"error": reason}
    if details is not None:
        body["details"] = details
    return json_response(body, status)


async def body_chunks(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it streams in; 413 as soon as it passes ``limit`` bytes (or declares more).

    The one body reader of the API: every route reads its body through this (or :func:`read_model`), so no
    route holds an unbounded body (``tests/api/test_keys_access.py`` checks that no handler reads one otherwise).
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body larger than {limit} bytes")
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"body larger than {limit} bytes")
        yield chunk


async def read_body(request: Request, limit: int = MAX_JSON_BYTES) -> bytes:
    """The whole body, at most ``limit`` bytes (413 past it)."""
    return b"".join([chunk async for chunk in body_chunks(request, limit)])


async def read_model(request: Request, model: type[M], empty: M | None = None) -> M:
    """Parse the JSON body into ``model``: 400 for malformed JSON, 422 for invalid fields (with reasons) — a
    string anywhere holding a lone UTF-16 surrogate included — 413 past :data:`MAX_JSON_BYTES`. An empty body
    is ``empty`` when given (routes whose body is optional)."""
    body = await read_body(request)
    if not body and empty is not None:
        return empty
    try:
        data = loads_keeping_surrogates(body) if body else None
    except NotJsonError:
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    for paths, reason in (
        (surrogate_paths(data), "a lone UTF-16 surrogate (\\uD800–\\uDFFF) is not text"),  # no UTF-8 holds it
        (nul_paths(data), "NUL (\\u0000) is not accepted in text"),  # no Postgres text holds it
    ):
        if paths:
            details = [{"field": path, "reason": reason} for path in paths]
            raise ApiError(422, "invalid input: " + "; ".join(f"{d['field']}: {reason}" for d in details), details)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(part) for part in error["loc"]), "reason": error["msg"]} for error in exc.errors()
        ]
        reason = "invalid input: " + "; ".join(f"{d['field']}: {d['reason']}" for d in details)
        raise ApiError(422, reason, details) from None


class ApiContext:
    """The process's resources, opened in the lifespan: Postgres (async pool + a small sync engine), Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] | None = None
        self._redis: aioredis.Redis | None = None
        self._db: Database | None = None
        self._broker: Any = None
        self._lock = threading.Lock()
        self._hub: EventHub | None = None
        self._http: EndpointClient | None = None
        self._graph_http: httpx.Client | None = None
        self._secrets: Secrets | None = None
        self.templates = TemplateCache(ttl_s=settings.template_cache_seconds)
        self.graph = Graph(settings.meta_graph_url, settings.meta_api_version)
        self._media: MediaStorage | None = None

    @property
    def media_storage(self) -> MediaStorage:
        """Where media files are kept (``ZAPQ_MEDIA_DIR`` or the S3 bucket), built once."""
        if self._media is None:
            self._media = storage_from_settings(self.settings)
        return self._media

    @property
    def secrets(self) -> Secrets:
        """The cipher of stored credentials (``ZAPQ_SECRETS_KEYS``), built once."""
        if self._secrets is None:
            self._secrets = Secrets(self.settings.secrets_key_list)
        return self._secrets

    @property
    def guard(self) -> AddressGuard:
        """The outbound address guard (URLs customers choose: webhook endpoints, bridges)."""
        return AddressGuard.for_environment(self.settings.env, self.settings.outbound_allowed)

    @property
    def hub(self) -> EventHub:
        """The process's event feed listener."""
        assert self._hub is not None, "the API lifespan has not started"
        return self._hub

    @property
    def endpoints(self) -> Endpoints:
        """The webhook endpoint actions."""
        return Endpoints(guard=self.guard, redis=self.redis, kicks=Kicks(self.namespace))

    @property
    def webhook_http(self) -> EndpointClient:
        """The HTTP client for endpoint test pings (as the dispatcher's: guarded, answers capped)."""
        if self._http is None:
            self._http = endpoint_http_client(self.settings, max_connections=8)
        return self._http

    @property
    def graph_http(self) -> httpx.Client:
        """The HTTP client for the Graph API (template syncs, run in worker threads), built once."""
        with self._lock:
            if self._graph_http is None:
                self._graph_http = graph_client()
            return self._graph_http

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        """The async Postgres pool (rows as dicts, autocommit)."""
        assert self._pool is not None, "the API lifespan has not started"
        return self._pool

    @property
    def redis(self) -> aioredis.Redis:
        """The asyncio Redis client."""
        assert self._redis is not None, "the API lifespan has not started"
        return self._redis

    @property
    def db(self) -> Database:
        """A small sync engine for the actions written for sync callers too (dead-letter replay, campaign start),
        run in worker threads."""
        assert self._db is not None, "the API lifespan has not started"
        return self._db

    @property
    def namespace(self) -> str:
        """The Redis namespace of the queues."""
        return self.settings.redis_namespace

    def broker(self) -> Any:
        """A broker built once per process, for replays (sync; used from worker threads)."""
        with self._lock:
            if self._broker is None:
                from libs.broker import build_broker
                from libs.middleware.lifecycle import Lifecycle

                broker = build_broker(self.settings)
                if not any(isinstance(m, Lifecycle) for m in broker.middleware):
                    broker.add_middleware(Lifecycle())
                self._broker = broker
            return self._broker

    @property
    def sync_redis(self) -> Any:
        """A sync Redis client (the replay broker's), for actions run in worker threads."""
        return self.broker().client

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open every resource for the app's lifetime; close them after."""
        self._pool = async_pool(self.settings, timeout=5.0, connect_timeout=3, dict_rows=True)
        await self._pool.open(wait=False)
        self._redis = async_redis_client(self.settings, connect_timeout=2, timeout=5)
        self._db = Database.from_settings(self.settings, pool_size=2)
        self._hub = EventHub(self.settings.libpq_url, self._pool)
        await self._hub.start()
        try:
            yield
        finally:
            await self._hub.stop()
            if self._http is not None:
                await self._http.aclose()
            if self._graph_http is not None:
                self._graph_http.close()
            if self._broker is not None:
                from libs.middleware.lifecycle import Lifecycle

                for middleware in self._broker.middleware:
                    if isinstance(middleware, Lifecycle):
                        middleware.close()
                self._broker.close()
            self._db.close()
            if self._media is not None:
                self._media.close()
            await self._redis.aclose()
            await self._pool.close()


def context(request: Request) -> ApiContext:
    """The app's :class:`ApiContext`."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


#: Largest Postgres ``bigint``.
MAX_ID = 2**63 - 1
#: Largest page of messages or contacts.
MAX_PAGE = 500


def path_id(request: Request, name: str = "id") -> int:
    """An integer path parameter (the route's ``{id:int}`` convertor already rejected non-numbers)."""
    value = int(request.path_params[name])
    if not 0 < value <= MAX_ID:  # ids are Postgres bigints: anything outside cannot exist
        raise ApiError(404, f"no {name} {value}")
    return value


#: An integer as a query string writes it: ASCII digits (``str.isdigit`` accepts ``²``, which ``int`` refuses),
#: ``1.0`` included (JSON Schema's integers are numbers without a fraction).
_INTEGER = re.compile(r"-?[0-9]+(?:\.0+)?")


def _integer(value: str) -> int | None:
    return int(value.partition(".")[0]) if _INTEGER.fullmatch(value) else None


def query_value(request: Request, name: str) -> str | None:
    """A query parameter given at most once (400 when repeated: which one would count?)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times")
    if values and "\x00" in values[0]:
        raise ApiError(400, f"{name} holds NUL (\\u0000)")
    return values[0] if values else None


def query_id(request: Request, name: str) -> int | None:
    """An optional id in the query string (``company_id=7``): 400 unless a positive integer."""
    value = query_value(request, name)
    if value is None or value == "":
        return None
    number = _integer(value)
    if number is None or not 0 < number <= MAX_ID:
        raise ApiError(400, f"{name} must be a positive integer")
    return number


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]`` (400 otherwise), ``default`` when absent."""
    value = query_value(request, name)
    if value is None or value == "":
        return default
    number = _integer(value)
    if number is None or not low <= number <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return number
