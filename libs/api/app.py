"""The API's ASGI app: the route table (which is also the OpenAPI document), auth, errors, the lifespan."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from libs.api import (
    campaigns,
    companies,
    connections,
    contacts,
    events,
    keys,
    media,
    messages,
    metrics,
    ops,
    optouts,
    query,
    templates,
)
from libs.api.access import guarded
from libs.api.auth import BearerAuth
from libs.api.http import ApiContext, ApiError, error_response, json_response
from libs.api.openapi import Endpoint, build_openapi
from libs.api.pages import DASHBOARD_HTML, DOCS_HTML
from libs.api.pages_charts import STATIC_DIR, STATIC_FILES
from libs.api.pages_console import CONSOLE_HTML
from libs.api.schemas import (
    REQUEST_MODELS,
    CampaignIn,
    CampaignStartIn,
    CompanyIn,
    ConnectionIn,
    ConnectionPatch,
    EndpointIn,
    EndpointPatch,
    KeyIn,
    MessageIn,
    OptOutIn,
    ReplayIn,
    TemplateSyncIn,
)
from libs.errors import DependencyUnavailableError
from libs.events.endpoints import EndpointError
from libs.events.types import RESPONSE_MODELS, EventOut, EventPage
from libs.refusals import RefusedError
from libs.settings import Settings

logger = logging.getLogger(__name__)


class PhoneConvertor(Convertor[str]):
    """``{phone:phone}``: a path segment holding 7 to 15 digits (``+55 (11) 98888-7777`` URL-encoded). Other text
    is not this route, so ``DELETE /api/opt-outs/import`` is a 405 naming ``POST``, not a bad phone number."""

    regex = r"[^/\d]*(?:\d[^/\d]*){7,15}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("phone", PhoneConvertor())


def routed(path: str) -> str:
    """The Starlette path of a published one: ``{phone}`` only matches a phone number (:class:`PhoneConvertor`)."""
    return path.replace("{phone}", "{phone:phone}")


async def dashboard(request: Request) -> Response:
    """The dashboard page (asks for the token, then reads the API with it)."""
    return HTMLResponse(DASHBOARD_HTML)


async def console(request: Request) -> Response:
    """The console page: find a message, its timeline and its send job (asks for the token)."""
    return HTMLResponse(CONSOLE_HTML)


async def static_file(request: Request) -> Response:
    """A vendored static file (the chart library), cached for a day: its name carries its version."""
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        raise HTTPException(404)
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"cache-control": "max-age=86400"})


async def docs(request: Request) -> Response:
    """A readable rendering of ``/openapi.json``."""
    return HTMLResponse(DOCS_HTML)


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document."""
    return json_response(request.app.state.openapi)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/api/messages", messages.create_message, "Create and enqueue a message", "messages",
             MessageIn, status=201, scope="messages:write", audit=False, query=(query.IDEMPOTENCY_KEY,),
             also=((200, "the message an earlier request with this Idempotency-Key created"),),
             refuses=query.REFUSES_MESSAGE),
    Endpoint("GET", "/api/messages", messages.list_messages,
             "Messages by company, contact, direction, status or campaign (cursor pages)", "messages",
             scope="messages:read", query=query.MESSAGES),
    Endpoint("GET", "/api/messages/{id:int}", messages.get_message, "A message", "messages", scope="messages:read"),
    Endpoint("POST", "/api/messages/{id:int}/retry", messages.retry_message,
             "Send a failed message again (fresh attempts, its failure kept in history)", "messages",
             scope="messages:write"),
    Endpoint("POST", "/api/media", media.upload_media,
             "Upload a media file to send by id (multipart 'file'; 413/415 past Meta's limits)", "media",
             content="multipart/form-data", status=201, scope="messages:write", query=query.OF_COMPANY,
             errors=((415, "a type Meta does not take, or bytes that are not of the type declared"),)),
    Endpoint("GET", "/api/media/{id}", media.get_media, "A stored media file (an upload or inbound media)", "media",
             produces="*/*", scope="messages:read"),
    Endpoint("GET", "/api/contacts", contacts.list_contacts, "A company's contacts with their last message",
             "messages", scope="messages:read", query=query.CONTACTS),
    Endpoint("GET", "/api/contacts/{id:int}/messages", contacts.contact_messages,
             "The conversation with one contact", "messages", scope="messages:read", query=query.CONVERSATION),
    Endpoint("GET", "/api/events", events.list_events, "Published events after a cursor (long-poll with wait)",
             "events", response=EventPage, scope="events:read", query=query.EVENTS),
    Endpoint("GET", "/api/events/stream", events.stream_events, "Live events (Server-Sent Events, resumable)",
             "events", response=EventOut, produces="text/event-stream", scope="events:read", query=query.STREAM),
    Endpoint("GET", "/api/events/{id}", events.get_event, "One event with its delivery attempts", "events",
             scope="events:read"),
    Endpoint("POST", "/api/webhook-endpoints", events.create_endpoint,
             "Register a webhook endpoint (its secret is shown once)", "events", EndpointIn, status=201,
             scope="events:write", refuses="the company does not exist, or the outbound guard refuses the url"),
    Endpoint("GET", "/api/webhook-endpoints", events.list_endpoints, "Webhook endpoints with delivery figures",
             "events", scope="events:read", query=query.BY_COMPANY),
    Endpoint("GET", "/api/webhook-endpoints/{id:int}", events.get_endpoint, "A webhook endpoint", "events",
             scope="events:read"),
    Endpoint("PATCH", "/api/webhook-endpoints/{id:int}", events.patch_endpoint, "Change a webhook endpoint",
             "events", EndpointPatch, scope="events:write", refuses="the outbound guard refuses the url"),
    Endpoint("DELETE", "/api/webhook-endpoints/{id:int}", events.delete_endpoint, "Delete a webhook endpoint",
             "events", status=204, scope="events:write"),
    Endpoint("POST", "/api/webhook-endpoints/{id:int}/rotate-secret", events.rotate_secret,
             "New signing secret (the old one signs too for 24 h)", "events", scope="events:write"),
    Endpoint("POST", "/api/webhook-endpoints/{id:int}/test", events.test_endpoint, "Send a signed ping now",
             "events", scope="events:write"),
    Endpoint("POST", "/api/webhook-endpoints/{id:int}/replay", events.replay_endpoint,
             "Deliver one event again, or everything since a time", "events", ReplayIn, scope="events:write",
             refuses="event_id names no published event of this endpoint's company and types"),
    Endpoint("GET", "/api/opt-outs", optouts.list_opt_outs, "A company's opt-out list (by number)", "opt-outs",
             scope="messages:read", query=query.OPT_OUTS, refuses=query.REFUSES_COMPANY),
    Endpoint("POST", "/api/opt-outs", optouts.add_opt_outs, "Put numbers on a company's opt-out list", "opt-outs",
             OptOutIn, scope="messages:write", refuses=query.REFUSES_COMPANY),
    Endpoint("POST", "/api/opt-outs/import", optouts.import_opt_outs,
             "Import a company's opt-outs from a CSV ('phone' column; all or nothing)", "opt-outs",
             content="text/csv", scope="messages:write", query=query.OF_COMPANY, refuses=query.REFUSES_COMPANY),
    Endpoint("DELETE", "/api/opt-outs/{phone}", optouts.remove_opt_out, "Take a number off the opt-out list",
             "opt-outs", status=204, scope="messages:write", query=query.OF_COMPANY),
    Endpoint("POST", "/api/companies", companies.create_company, "Create a company", "companies", CompanyIn,
             status=201, scope="admin"),
    Endpoint("GET", "/api/companies", companies.list_companies, "Companies", "companies", scope="companies:read"),
    Endpoint("GET", "/api/companies/{id:int}", companies.get_company, "A company", "companies", scope="companies:read"),
    Endpoint("POST", "/api/connections", connections.create_connection, "Create a connection", "connections",
             ConnectionIn, status=201, scope="connections:write",
             refuses="the company does not exist, or the outbound guard refuses the bridge_url"),
    Endpoint("GET", "/api/connections", connections.list_connections, "Connections and their health",
             "connections", scope="connections:read", query=query.BY_COMPANY),
    Endpoint("GET", "/api/connections/{id:int}", connections.get_connection, "A connection", "connections",
             scope="connections:read"),
    Endpoint("PATCH", "/api/connections/{id:int}", connections.patch_connection, "Change a connection",
             "connections", ConnectionPatch, scope="connections:write",
             refuses="a field not of this connection's provider, or the outbound guard refuses the bridge_url"),
    Endpoint("POST", "/api/connections/{id:int}/deactivate", connections.deactivate_connection,
             "Deactivate a connection", "connections", scope="connections:write"),
    Endpoint("POST", "/api/connections/{id:int}/webhook-secret", connections.issue_webhook_secret,
             "A new webhook URL and secret for a Baileys connection (shown once)", "connections",
             scope="connections:write", refuses="not a baileys connection: only those have a webhook secret"),
    Endpoint("GET", "/api/templates", templates.list_templates,
             "WhatsApp templates of Meta connections (their WABA's catalogue, as last synced)", "templates",
             scope="connections:read", query=query.TEMPLATES,
             errors=((404, "connection_id names no connection, or another company's"),)),
    Endpoint("POST", "/api/templates/sync", templates.sync_templates,
             "Sync template catalogues from Meta now (one connection, or a company's)", "templates",
             TemplateSyncIn, body_optional=True, scope="connections:write",
             refuses="not a Meta connection, no waba_id, no access token, or no Meta connection with a waba_id to sync",
             errors=((404, "connection_id names no connection, or another company's"),
                     (502, "Meta refused or failed the catalogue read (nothing changed but its last_error)"))),
    Endpoint("POST", "/api/campaigns", campaigns.create_campaign, "Create a campaign (draft)", "campaigns",
             CampaignIn, status=201, scope="campaigns:write", refuses=query.REFUSES_CAMPAIGN),
    Endpoint("GET", "/api/campaigns", campaigns.list_campaigns, "Recent campaigns with progress", "campaigns",
             scope="campaigns:read", query=query.CAMPAIGNS),
    Endpoint("GET", "/api/campaigns/{id:int}", campaigns.get_campaign, "A campaign with its counters",
             "campaigns", scope="campaigns:read"),
    Endpoint("POST", "/api/campaigns/{id:int}/recipients", campaigns.upload_recipients,
             "Import recipients from a CSV upload", "campaigns", content="text/csv", scope="campaigns:write"),
    Endpoint("POST", "/api/campaigns/{id:int}/start", campaigns.start_campaign, "Start (or schedule) a campaign",
             "campaigns", CampaignStartIn, body_optional=True, scope="campaigns:write", refuses=query.REFUSES_TEMPLATE),
    Endpoint("POST", "/api/campaigns/{id:int}/pause", campaigns.pause_campaign, "Pause a campaign", "campaigns",
             scope="campaigns:write"),
    Endpoint("POST", "/api/campaigns/{id:int}/resume", campaigns.resume_campaign, "Resume a campaign",
             "campaigns", scope="campaigns:write", refuses=query.REFUSES_TEMPLATE),
    Endpoint("POST", "/api/campaigns/{id:int}/cancel", campaigns.cancel_campaign, "Cancel a campaign",
             "campaigns", scope="campaigns:write"),
    Endpoint("GET", "/api/queues", ops.queues, "Stats of every queue", "ops", scope="ops:read"),
    Endpoint("GET", "/api/jobs/{id}", ops.job, "Where a job is", "ops", scope="ops:read"),
    Endpoint("GET", "/api/dead-letters", ops.dead_letters, "Dead letters, newest first", "ops", scope="ops:read",
             query=query.DEAD_LETTERS),
    Endpoint("POST", "/api/dead-letters/{id:int}/replay", ops.replay_dead_letter, "Replay a dead letter", "ops",
             scope="ops:write"),
    Endpoint("GET", "/metrics", metrics.metrics, "Prometheus metrics", "ops", scope="ops:read"),
    Endpoint("GET", "/healthz", ops.healthz, "Liveness", "health", auth=False, scope="public"),
    Endpoint("GET", "/readyz", ops.readyz, "Readiness: Redis and Postgres", "health", auth=False, scope="public"),
    Endpoint("POST", "/api/keys", keys.create_key, "Create an API key (its text is shown once)", "keys", KeyIn,
             status=201, scope="admin", refuses="the company does not exist, or expires_at is already past"),
    Endpoint("GET", "/api/keys", keys.list_keys, "API keys (never their text)", "keys", scope="admin",
             query=query.BY_COMPANY),
    Endpoint("DELETE", "/api/keys/{key_id}", keys.revoke_key, "Revoke an API key", "keys", scope="admin"),
    Endpoint("GET", "/api/audit", keys.list_audit, "Changes made through the API and the CLI", "keys",
             scope="admin", query=query.AUDIT),
    Endpoint("GET", "/api/me", keys.me, "The calling key's company and scopes", "keys", scope="authenticated"),
    Endpoint("GET", "/openapi.json", openapi, "This document (open: it holds no data)", "docs", auth=False,
             scope="public"),
)  # fmt: skip

#: Paths answered without a token: the open endpoints above (health checks, this API's description) and the
#: static page shells (which hold no data).
OPEN_PATHS = frozenset(
    {
        "/",
        "/docs",
        "/messages",
        *(f"/static/{name}" for name in STATIC_FILES),
        *(e.path for e in ENDPOINTS if not e.auth),
    }
)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.reason, exc.details)


async def _endpoint_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EndpointError)
    return error_response(exc.status, exc.reason)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RefusedError)
    return error_response(exc.status, str(exc), exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    response = error_response(exc.status_code, reason)
    if exc.status_code == 405:  # RFC 9110: a 405 names the methods the resource has (each is its own route)
        methods = {
            method
            for route in request.app.routes
            if isinstance(route, Route) and route.path_regex.match(request.url.path)
            for method in route.methods or ()
        }
        response.headers["allow"] = ", ".join(sorted(methods))
    return response


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("dependency unavailable during %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(503, f"a dependency is unavailable ({type(exc).__name__}); retry later")


def create_app(settings: Settings) -> Starlette:
    """The API for ``settings`` (token, database, Redis namespace, key cache and rate limits)."""
    ctx = ApiContext(settings)
    routes: list[Any] = [Route(routed(e.path), guarded(e), methods=[e.method]) for e in ENDPOINTS]
    routes += [
        Route(path, page, methods=["GET"]) for path, page in (("/", dashboard), ("/docs", docs), ("/messages", console))
    ]
    routes.append(Route("/static/{name}", static_file, methods=["GET"]))
    app = Starlette(
        routes=routes,
        lifespan=ctx.lifespan,
        middleware=[Middleware(BearerAuth, ctx=ctx, open_paths=OPEN_PATHS)],
        exception_handlers={
            ApiError: _api_error,
            EndpointError: _endpoint_error,
            RefusedError: _refused,
            HTTPException: _http_error,
            psycopg.OperationalError: _unavailable,
            psycopg_pool.PoolTimeout: _unavailable,
            redis.exceptions.ConnectionError: _unavailable,
            redis.exceptions.TimeoutError: _unavailable,
            DependencyUnavailableError: _unavailable,
        },
    )
    app.state.ctx = ctx
    app.state.openapi = build_openapi(ENDPOINTS, REQUEST_MODELS, RESPONSE_MODELS)
    return app
