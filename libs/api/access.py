"""Authorization of the API: each route's scope (from its :class:`~libs.api.openapi.Endpoint`), a company key's
reach, and the audit record of every change.

A company key (one with a ``company_id``) reaches only its company: an id of another company's row answers 404
(as an unknown id: nothing is revealed), a body or filter naming another ``company_id`` answers 403. Keys without
a company (operators, the bootstrap token) reach every company.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from libs.access.keys import Principal
from libs.api.auth import PRINCIPAL
from libs.api.http import ApiError, context
from libs.api.openapi import Endpoint
from libs.audit import store as audit

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def principal(request: Request) -> Principal:
    """Who is calling (set by :class:`libs.api.auth.BearerAuth`)."""
    who: Principal = request.scope[PRINCIPAL]
    return who


def company_filter(request: Request, asked: int | None) -> int | None:
    """The company a listing is limited to: a company key's own (403 when it asks for another), else ``asked``."""
    own = principal(request).company_id
    if own is None:
        return asked
    if asked is not None and asked != own:
        raise ApiError(403, f"this API key is for company {own}, not company {asked}")
    return own


def check_body_company(request: Request, company_id: int) -> None:
    """403 when a body names a company other than a company key's own."""
    company_filter(request, company_id)


def visible(request: Request, row: Mapping[str, Any] | None) -> bool:
    """Whether the caller may see ``row`` (a row with ``company_id``)."""
    own = principal(request).company_id
    return row is not None and (own is None or row.get("company_id") == own)


def check_row(request: Request, row: Mapping[str, Any] | None, what: str, ident: object) -> None:
    """404 (``no <what> <id>``) unless the row exists and the caller may see it."""
    if not visible(request, row):
        raise ApiError(404, f"no {what} {ident}")


async def check_owner(request: Request, fetch: Callable[[], Awaitable[Mapping[str, Any] | None]], what: str,
                      ident: object) -> None:  # fmt: skip
    """For company keys only: load the row (``fetch``) and :func:`check_row` it (other keys skip the lookup)."""
    if principal(request).company_id is not None:
        check_row(request, await fetch(), what, ident)


def _target(request: Request, response: Response) -> str | None:
    if request.path_params:
        return ",".join(str(value) for value in request.path_params.values())
    if response.status_code == 201 and response.media_type == "application/json":
        body = orjson.loads(bytes(response.body))
        if isinstance(body, dict):
            value = body.get("id", body.get("key_id"))
            return str(value) if value is not None else None
    return None


def guarded(endpoint: Endpoint) -> Handler:
    """The endpoint's handler behind its scope check (403 naming the scope), its change audited on success."""
    handler = endpoint.handler
    audited = endpoint.audited

    async def guard(request: Request) -> Response:
        if endpoint.auth:
            who = principal(request)
            if not who.allows(endpoint.scope):
                raise ApiError(403, f"this API key lacks the {endpoint.scope} scope")
        response = await handler(request)
        if endpoint.auth and audited and response.status_code < 400:
            await _record(request, endpoint, response)
        return response

    guard.__name__ = handler.__name__
    guard.__doc__ = handler.__doc__
    return guard


async def _record(request: Request, endpoint: Endpoint, response: Response) -> None:
    who = principal(request)
    entry = {
        "actor": who.actor,
        "company_id": who.company_id,
        "action": endpoint.handler.__name__,
        "target": _target(request, response),
        "details": {"method": request.method, "path": request.url.path, "status": response.status_code},
    }
    try:
        async with context(request).pool.connection() as conn:
            await audit.record(conn, **entry)
    except Exception:  # the change is made: answer it; the missing record is logged loudly instead
        logger.exception("audit record not written: %s", entry)
