"""A company's opt-out list: ``GET/POST/DELETE /api/opt-outs`` and a CSV import. The work is done by
:mod:`libs.rules.actions`; these handlers parse and render."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from libs.api.access import check_body_company, company_filter
from libs.api.csvstream import CsvError, CsvStream
from libs.api.http import ApiError, body_chunks, context, json_response, query_id, query_int, read_model
from libs.api.schemas import OptOutIn, normalize_phone
from libs.rules import actions

MAX_PAGE = 1_000
#: Largest CSV import accepted.
MAX_IMPORT_BYTES = 50 * 1024 * 1024
#: Rejected CSV rows reported back in detail.
MAX_REPORTED_ERRORS = 20


def _company(request: Request) -> int:
    """The company asked for: a company key's own (403 for another one), else ``company_id`` (required)."""
    company = company_filter(request, query_id(request, "company_id"))
    if company is None:
        raise ApiError(400, "company_id is required")
    return company


def _phone(value: str) -> str:
    try:
        return normalize_phone(value)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


async def list_opt_outs(request: Request) -> Response:
    """``GET /api/opt-outs?company_id=N[&after=<phone>&limit=]``: the company's list, by number."""
    company = _company(request)
    after = request.query_params.get("after") or ""
    limit = query_int(request, "limit", default=100, low=1, high=MAX_PAGE)
    rows, more = await actions.list_opt_outs(context(request).pool, company, after=after, limit=limit)
    return json_response({"opt_outs": rows, "after": rows[-1]["phone"] if rows and more else None, "has_more": more})


async def add_opt_outs(request: Request) -> Response:
    """``POST /api/opt-outs`` ``{"company_id", "phones": [...]}`` → 200 with how many were added (numbers
    already on the list are left as they were)."""
    body = await read_model(request, OptOutIn)
    check_body_company(request, body.company_id)
    added = await actions.add_opt_outs(context(request).pool, body.company_id, body.phones, body.source)
    return json_response({"company_id": body.company_id, "added": added, "already": len(body.phones) - added})


async def remove_opt_out(request: Request) -> Response:
    """``DELETE /api/opt-outs/{phone}?company_id=N`` → 204 (404 when the number is not on the list)."""
    company = _company(request)
    await actions.remove_opt_out(context(request).pool, company, _phone(request.path_params["phone"]))
    return Response(status_code=204)


async def import_opt_outs(request: Request) -> Response:
    """``POST /api/opt-outs/import?company_id=N`` with a CSV (a ``phone`` column, other columns ignored): all or
    nothing — every number added (200 with the counts), or, when a row is not a phone number, none (422 with the
    first rejected rows)."""
    company = _company(request)
    stream = CsvStream()
    header: list[str] = []
    phones: list[str] = []
    errors: list[dict[str, object]] = []
    rows = 0

    def take(records: list[list[str]]) -> None:
        nonlocal rows
        for record in records:
            if not header:
                header.extend(name.strip().lower() for name in record)
                if "phone" not in header:
                    raise ApiError(400, "the CSV header needs a 'phone' column")
                continue
            rows += 1
            column = header.index("phone")
            try:
                phones.append(normalize_phone(record[column] if column < len(record) else ""))
            except ValueError as exc:
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append({"row": rows, "error": str(exc)})
                elif len(errors) == MAX_REPORTED_ERRORS:
                    errors.append({"row": None, "error": "more rows rejected"})

    try:
        async for chunk in body_chunks(request, MAX_IMPORT_BYTES):
            take(stream.feed(chunk))
        take(stream.feed(b"", final=True))
    except CsvError as exc:
        raise ApiError(400, str(exc)) from None
    if not header:
        raise ApiError(400, "the CSV is empty (it needs a header with a 'phone' column)")
    if errors:
        raise ApiError(422, f"{len(errors)} row(s) rejected; nothing was imported", {"errors": errors})
    unique = sorted(set(phones))
    added = await actions.add_opt_outs(context(request).pool, company, unique, "csv")
    return json_response({"company_id": company, "rows": rows, "added": added, "already": len(unique) - added})
