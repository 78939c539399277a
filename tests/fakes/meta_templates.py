"""The fake Meta API's template catalogue: ``GET /{version}/{waba_id}/message_templates`` (paged as Meta pages it),
template sends checked against it, and ``message_template_status_update`` webhooks on demand.

Shapes follow ``shared/docs/whatsapp-more.md`` section 4:

* ``GET /{version}/{waba_id}/message_templates?limit=N&after=<cursor>`` → ``{"data": [...], "paging": {"cursors":
  {"before", "after"}, "next": <url>}}`` (``next`` only when more follow). A bad token → 401 code 190; a WABA
  without a catalogue → 400 code 100 (Meta: "Unsupported get request"). ``fail_with`` forces an error code.
* A template send to a number of the configured WABA, once a catalogue is set for it: an unknown name or
  language → 132001; PAUSED → 132015; DISABLED → 132016; another status than APPROVED → 132001; a header or body
  parameter count other than the template's placeholders → 132000 (Meta's own checks, mirrored).

Control: ``POST /_fake/templates`` ``{"templates": [...], "waba_id"?, "fail_with"?}`` replaces a WABA's catalogue
(default: the config's ``waba_id``); ``GET /_fake/templates`` shows the catalogues and how many list calls
were made; ``POST /_fake/template-status`` ``{"name", "language", "event", "reason"?, "waba_id"?}`` changes a
template's status and posts the signed webhook to ``webhook_url`` when set (the answer holds the payload).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import meta_wire as wire

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MEDIA_HEADERS = {"IMAGE", "VIDEO", "DOCUMENT", "LOCATION"}
#: Template statuses a send is refused in, with Meta's code.
REFUSED_STATUS = {"PAUSED": 132015, "DISABLED": 132016}


def template(name: str, body: str = "Hello", *, language: str = "en_US", status: str = "APPROVED",
             category: str = "MARKETING", header: str | None = None, buttons: list[dict[str, Any]] | None = None,
             template_id: int | None = None) -> dict[str, Any]:  # fmt: skip
    """A template as Meta lists it (``header``: a TEXT header's text, or IMAGE / VIDEO / DOCUMENT)."""
    components: list[dict[str, Any]] = []
    if header in MEDIA_HEADERS:
        components.append({"type": "HEADER", "format": header})
    elif header is not None:
        components.append({"type": "HEADER", "format": "TEXT", "text": header})
    components.append({"type": "BODY", "text": body})
    if buttons:
        components.append({"type": "BUTTONS", "buttons": buttons})
    return {
        "name": name,
        "language": language,
        "status": status,
        "category": category,
        "id": str(template_id or abs(hash((name, language))) % 10**16),
        "components": components,
    }


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"i:{index}".encode()).decode().rstrip("=")


def _index(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return None
    return int(text[2:]) if text.startswith("i:") and text[2:].isdigit() else None


def _placeholders(text: object) -> int:
    return len(set(PLACEHOLDER.findall(text))) if isinstance(text, str) else 0


def _expected(components: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"header": 0, "body": 0}
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "HEADER":
            media = str(component.get("format", "TEXT")).upper() in MEDIA_HEADERS
            counts["header"] = 1 if media else _placeholders(component.get("text"))
        elif kind == "BODY":
            counts["body"] = _placeholders(component.get("text"))
    return counts


def _given(components: object) -> dict[str, int]:
    counts = {"header": 0, "body": 0}
    for component in components if isinstance(components, list) else []:
        kind = str(component.get("type", "")).lower() if isinstance(component, dict) else ""
        if kind in counts:
            parameters = component.get("parameters")
            counts[kind] += len(parameters) if isinstance(parameters, list) else 0
    return counts


def template_status_webhook(
    waba_id: str,
    name: str,
    language: str,
    event: str,
    *,
    reason: str | None = None,
    template_id: int = 1689556908129835,
) -> dict[str, Any]:
    """A ``message_template_status_update`` webhook (doc section 4; ``message_template_id`` a JSON number)."""
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": template_id,
        "message_template_name": name,
        "message_template_language": language,
        "reason": reason,
        "message_template_category": "MARKETING",
    }
    if event == "PAUSED":
        value["other_info"] = {"title": "FIRST_PAUSE", "description": "paused for 3 hours: low quality"}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "time": int(time.time()),
                   "changes": [{"field": "message_template_status_update", "value": value}]}],
    }  # fmt: skip


@dataclass
class TemplateCatalogues:
    """Each WABA's templates as the fake Graph API lists them, and the list calls seen."""

    catalogues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail_with: int | None = None
    list_calls: int = 0

    def clear(self) -> None:
        """No catalogue, no forced error, no calls."""
        self.catalogues.clear()
        self.fail_with = None
        self.list_calls = 0

    def refusal(self, waba_id: str, sent: dict[str, Any]) -> int | None:
        """The Meta error code a template send gets, or ``None`` (also when the WABA has no catalogue set)."""
        listed = self.catalogues.get(waba_id)
        if listed is None:
            return None
        language = (sent.get("language") or {}).get("code")
        found = next((t for t in listed if t["name"] == sent.get("name") and t["language"] == language), None)
        if found is None:
            return 132001
        if found["status"] in REFUSED_STATUS:
            return REFUSED_STATUS[found["status"]]
        if found["status"] != "APPROVED":
            return 132001
        if _expected(found.get("components") or []) != _given(sent.get("components")):
            return 132000
        return None


def routes(fake: Any) -> list[Route]:
    """The template routes of the fake Meta API ``fake`` (a ``MetaFake`` with a ``templates`` catalogue)."""
    state: TemplateCatalogues = fake.templates

    async def list_templates(request: Request) -> Response:
        state.list_calls += 1
        auth = request.headers.get("authorization", "")
        if auth[7:] not in fake.config.valid_tokens:
            return JSONResponse(wire.error_envelope(190), status_code=401)
        if state.fail_with is not None:
            code = state.fail_with
            return JSONResponse(wire.error_envelope(code), status_code=wire.default_http_status(code))
        listed = state.catalogues.get(request.path_params["waba_id"])
        if listed is None:
            message = f"Unsupported get request. Object with ID '{request.path_params['waba_id']}' does not exist"
            return JSONResponse(wire.error_envelope(100, message=message), status_code=400)
        limit = int(request.query_params.get("limit") or 25)
        after = request.query_params.get("after")
        start = 0 if after is None else (_index(after) or 0) + 1
        page = listed[start : start + limit]
        paging: dict[str, Any] = {}
        if page:
            paging["cursors"] = {"before": _cursor(start), "after": _cursor(start + len(page) - 1)}
            if start + len(page) < len(listed):
                paging["next"] = f"{request.url.replace(query='')}?limit={limit}&after={_cursor(start + len(page) - 1)}"
        return JSONResponse({"data": page, "paging": paging})

    async def set_templates(request: Request) -> Response:
        body = await request.json()
        state.catalogues[str(body.get("waba_id") or fake.config.waba_id)] = list(body.get("templates") or [])
        state.fail_with = body.get("fail_with")
        return JSONResponse({"ok": True})

    async def get_templates(request: Request) -> Response:
        return JSONResponse({"catalogues": state.catalogues, "list_calls": state.list_calls})

    async def template_status(request: Request) -> Response:
        body = await request.json()
        waba_id = str(body.get("waba_id") or fake.config.waba_id)
        for listed in state.catalogues.get(waba_id, []):
            if listed["name"] == body["name"] and listed["language"] == body["language"]:
                listed["status"] = body["event"]
        payload = template_status_webhook(waba_id, body["name"], body["language"], body["event"],
                                          reason=body.get("reason"))  # fmt: skip
        posted = None
        if fake.config.webhook_url:
            raw = wire.serialise(payload)
            headers = {"Content-Type": "application/json",
                       "X-Hub-Signature-256": wire.signature_header(raw, fake.config.app_secret)}  # fmt: skip
            fake.webhooks.schedule([(fake.config.webhook_url, "template_status", raw, headers)], gap_s=0)
            posted = fake.config.webhook_url
        return JSONResponse({"webhook": payload, "posted_to": posted})

    return [
        Route("/{version}/{waba_id}/message_templates", list_templates, methods=["GET"]),
        Route("/_fake/templates", set_templates, methods=["POST"]),
        Route("/_fake/templates", get_templates, methods=["GET"]),
        Route("/_fake/template-status", template_status, methods=["POST"]),
    ]
