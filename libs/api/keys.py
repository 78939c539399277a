"""API keys (``/api/keys``), the audit log (``/api/audit``) and who am I (``/api/me``, for the dashboard)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.access import actions, store
from libs.access.keys import SCOPES, AccessError, KeyNotFoundError
from libs.api.access import principal
from libs.api.http import ApiError, context, json_response, query_id, query_int, read_model
from libs.api.schemas import KeyIn
from libs.audit import store as audit
from libs.timeparse import TimeParseError, parse_since_text


def access_error(exc: AccessError) -> ApiError:
    """The API's answer to a key error (the one place they are translated): an unknown key 404; anything else
    422 — a shape the schema already refuses (scopes) or a value only the current state refuses (an expiry
    already past, a company that does not exist; schemathesis.toml lists create_key's 422 as expected)."""
    return ApiError(404 if isinstance(exc, KeyNotFoundError) else 422, str(exc))


async def create_key(request: Request) -> Response:
    """``POST /api/keys`` → 201 with the key's text in ``key`` (shown this once; only its hash is kept)."""
    body = await read_model(request, KeyIn)
    new = actions.KeyRequest(company_id=body.company_id, scopes=body.scopes, name=body.name, expires_at=body.expires_at)
    try:
        async with context(request).pool.connection() as conn:
            row = await actions.create_key(conn, new)
    except AccessError as exc:
        raise access_error(exc) from None
    return json_response(row, 201)


async def list_keys(request: Request) -> Response:
    """``GET /api/keys[?company_id=N]``: keys newest first (never their text or hash)."""
    async with context(request).pool.connection() as conn:
        return json_response(await store.listed(conn, query_id(request, "company_id")))


async def revoke_key(request: Request) -> Response:
    """``DELETE /api/keys/{key_id}``: the key answers 401 from now on (within the key cache time on every API
    process); revoking again changes nothing."""
    try:
        async with context(request).pool.connection() as conn:
            return json_response(await actions.revoke_key(conn, request.path_params["key_id"]))
    except AccessError as exc:
        raise access_error(exc) from None


async def list_audit(request: Request) -> Response:
    """``GET /api/audit[?since=2h|ISO&company_id=N&limit=]``: changes made through the API and the CLI, newest
    first: when, by which key (``key:<id>``, ``admin-token``, ``cli``), what and on which id."""
    try:
        since = parse_since_text(request.query_params["since"]) if request.query_params.get("since") else None
    except TimeParseError as exc:
        raise ApiError(400, str(exc)) from None
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    async with context(request).pool.connection() as conn:
        rows = await audit.newest(conn, since=since, company_id=query_id(request, "company_id"), limit=limit)
    return json_response(rows)


async def me(request: Request) -> Response:
    """``GET /api/me``: the calling key's company and scopes (``admin`` holds every scope)."""
    who = principal(request)
    scopes = list(SCOPES) if "admin" in who.scopes else sorted(who.scopes)
    return json_response({"actor": who.actor, "company_id": who.company_id, "scopes": scopes})
