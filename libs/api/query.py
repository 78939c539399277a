"""The query and path parameters of the API's routes, as ``/openapi.json`` publishes them.

Each schema says exactly what the handler's reader accepts (:func:`libs.api.http.query_id`, ``query_int``, …):
anything it allows is answered, anything else is a 400 (404 for a path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.api.http import MAX_ID, MAX_PAGE
from libs.api.schemas import PHONE_PATTERN
from libs.events.feed import MAX_LIMIT, MAX_WAIT_S
from libs.events.types import EVENT_ID_PATTERN, EVENT_TYPES
from libs.media.actions import MEDIA_ID
from libs.timeparse import SINCE_PATTERN


@dataclass(frozen=True)
class Param:
    """One query parameter: its name, JSON schema, whether it is required, what it means."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    #: ``query`` or ``header``.
    location: str = "query"

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI parameter object. An optional number may be given empty (``limit=``): as if left out, as
        clients that send ``None`` write it."""
        schema = self.schema
        if not self.required and schema.get("type") in ("integer", "number"):
            schema = {"anyOf": [schema, {"type": "string", "maxLength": 0}], "description": "empty: as if left out"}
        out: dict[str, Any] = {"name": self.name, "in": self.location, "required": self.required, "schema": schema}
        if self.description:
            out["description"] = self.description
        return out


#: A row id in a query string (``company_id=7``).
ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
#: A path segment holding a phone number (7 to 15 digits, anything but ``/`` around them).
PHONE_SEGMENT = PHONE_PATTERN.replace(r"\D", r"[^/\d]")
#: What ``since`` accepts: a duration ago (``2h``, ``30d``) or an ISO date-time.
#: (Days 29 to 31 are accepted too where the month has them; a pattern cannot say which months do.)
SINCE = {
    "type": "string",
    "pattern": "^$|" + SINCE_PATTERN.replace("(?:0[1-9]|[12][0-9]|3[01])", "(?:0[1-9]|1[0-9]|2[0-8])"),
    "description": "a duration ago (2h, 30d) or an ISO date-time (empty: no bound)",
}
#: Path parameters that are more than an integer id (``{id:int}``) or any text, by route path.
PATH_SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    "/api/opt-outs/{phone}": {"phone": {"type": "string", "pattern": PHONE_SEGMENT}},
    "/api/events/{id}": {"id": {"type": "string", "pattern": EVENT_ID_PATTERN}},
    "/api/jobs/{id}": {"id": {"type": "string", "minLength": 1, "maxLength": 64}},
    "/api/media/{id}": {"id": {"type": "string", "pattern": MEDIA_ID.pattern}},
}


def limit(high: int, default: int) -> Param:
    """``limit``: how many rows a page holds."""
    return Param("limit", {"type": "integer", "minimum": 1, "maximum": high, "default": default}, "page size")


def company(required: bool = False) -> Param:
    """``company_id``: whose rows (a company key's own company when left out)."""
    text = "the company (a company key: its own, may be left out)" if required else "only this company's"
    return Param("company_id", ID, text, required)


IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"},
    "a repeated key answers the first message (200) instead of creating another",
    location="header",
)
AFTER_ID = Param("after", ID, "rows after this id (oldest first)")
BEFORE_ID = Param("before", ID, "rows before this id (newest first)")
MESSAGES = (
    company(),
    Param("contact", {"type": "string", "pattern": f"^$|{PHONE_PATTERN}"}, "the contact's phone number"),
    Param("direction", {"type": "string", "enum": ["", "in", "out"]}, "empty: both"),
    Param(
        "status",
        {
            "type": "string",
            "enum": ["", "received", "queued", "sending", "sent", "delivered", "read", "played", "failed", "cancelled"],
        },
        "empty: any",
    ),
    Param("campaign_id", ID),
    Param("external_id", {"type": "string", "maxLength": 200}, "the provider's id (a wamid; empty: any)"),
    AFTER_ID,
    BEFORE_ID,
    limit(MAX_PAGE, 50),
)
CONVERSATION = (AFTER_ID, BEFORE_ID, limit(MAX_PAGE, 50))
CONTACTS = (company(required=True), AFTER_ID, limit(MAX_PAGE, 100))
_TYPE = "|".join(t.replace(".", "\\.") for t in EVENT_TYPES)
_TYPES = Param(
    "types",
    {"type": "string", "pattern": rf"^[\s,]*(?:(?:{_TYPE})(?:\s*,[\s,]*(?:{_TYPE}))*)?[\s,]*$"},
    "comma-separated event types (none: every type)",
)
_CURSOR = Param("after", {"type": "string", "pattern": r"^\s*[0-9]{0,18}\s*$"}, "a cursor (next_cursor of a page)")
EVENTS = (
    company(),
    _CURSOR,
    _TYPES,
    limit(MAX_LIMIT, 100),
    Param("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}, "seconds to long-poll for an event"),
)
STREAM = (company(), _TYPES, _CURSOR)
BY_COMPANY = (company(),)
OF_COMPANY = (company(required=True),)
OPT_OUTS = (company(required=True), Param("after", {"type": "string"}, "numbers after this one"), limit(1_000, 100))
CAMPAIGNS = (limit(500, 20),)
DEAD_LETTERS = (
    Param("queue", {"type": "string"}),
    Param("since", SINCE),
    limit(1_000, 100),
    Param("state", {"type": "string", "enum": ["all", "dead"], "default": "all"}),
)
AUDIT = (Param("since", SINCE), company(), limit(1_000, 100))
#: A template status as Meta writes it (APPROVED, PENDING_DELETION, …).
TEMPLATE_STATUS_PATTERN = r"^[A-Za-z_]{1,32}$"
#: A template page's ``after``: ``<connection_id>:<name>:<language>`` (a name may hold ``:``, a language not).
TEMPLATE_AFTER_PATTERN = r"^([0-9]{1,18}):([\s\S]+):([^:]+)$"
TEMPLATES = (
    company(),
    Param("connection_id", ID, "only this connection's catalogue (the answer then has its catalogue state)"),
    Param("status", {"type": "string", "pattern": f"^$|{TEMPLATE_STATUS_PATTERN}"}, "APPROVED, PAUSED, … (empty: any)"),
    Param("after", {"type": "string", "pattern": f"^$|{TEMPLATE_AFTER_PATTERN}"}, "the after value of a page"),
    limit(1_000, 100),
)

#: Why a request valid by the schema may still answer 422 (``Endpoint.refuses``), shared by several routes.
REFUSES_COMPANY = "the company does not exist"
REFUSES_TEMPLATE = (
    "the template is not in the connection's synced catalogue (template_unknown), not approved "
    "(template_not_approved) or its parameters do not fit (template_parameters)"
)
REFUSES_CAMPAIGN = f"the company or the connection cannot be used (another company's, none such); or {REFUSES_TEMPLATE}"
REFUSES_MESSAGE = (
    "the company, connection or media cannot be used (none such, another company's, no active connection), "
    "its bridge cannot send this kind, or a WhatsApp rule forbids it now (details.reason: outside_service_window, "
    f"opted_out); or {REFUSES_TEMPLATE}"
)
