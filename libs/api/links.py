"""OpenAPI links: which answer gives the id another operation needs (create a company → a connection for it →
a message, a campaign, its templates, a webhook endpoint, an opt-out …; an upload → the file).

Generated clients show them as "next steps"; schemathesis's stateful phase follows them, so every ``{id}`` route
is reached with ids that exist (``tests/api/test_contract.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Link:
    """From a success answer of ``source`` (an operationId) to ``target``: where each value comes from."""

    source: str
    target: str
    parameters: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] | None = None

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI link object."""
        out: dict[str, Any] = {"operationId": self.target}
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        if self.body is not None:
            out["requestBody"] = dict(self.body)
        return out


ID = "$response.body#/id"
COMPANY = {"company_id": ID}
CAMPAIGN_ACTIONS = (
    "get_campaign", "upload_recipients", "start_campaign", "pause_campaign", "resume_campaign", "cancel_campaign",
)  # fmt: skip


def _each(source: str, targets: tuple[str, ...], parameters: dict[str, str]) -> list[Link]:
    return [Link(source, target, parameters) for target in targets]


LINKS: tuple[Link, ...] = (
    Link("create_company", "get_company", {"path.id": ID}),
    Link("create_company", "create_connection", body=COMPANY),
    Link("create_company", "create_endpoint", body=COMPANY),
    Link("create_company", "add_opt_outs", body=COMPANY),
    Link("create_company", "create_key", body=COMPANY),
    *_each("create_company", ("list_contacts", "list_opt_outs", "list_messages"), {"query.company_id": ID}),
    *_each(
        "create_connection",
        ("get_connection", "patch_connection", "deactivate_connection", "issue_webhook_secret"),
        {"path.id": ID},
    ),
    *(
        Link("create_connection", target, body={"company_id": "$response.body#/company_id", "connection_id": ID})
        for target in ("create_message", "create_campaign")
    ),
    Link("create_connection", "list_templates", {"query.connection_id": ID}),
    Link("create_connection", "sync_templates", body={"connection_id": ID}),
    *_each("create_message", ("get_message", "retry_message"), {"path.id": ID}),
    Link("upload_media", "get_media", {"path.id": ID}),
    Link("create_message", "job", {"path.id": "$response.body#/job_id"}),
    Link("create_message", "list_contacts", {"query.company_id": "$response.body#/company_id"}),
    *_each(
        "create_campaign",
        CAMPAIGN_ACTIONS,
        {"path.id": ID},
    ),
    *_each(
        "create_endpoint",
        ("get_endpoint", "patch_endpoint", "delete_endpoint", "rotate_secret", "test_endpoint", "replay_endpoint"),
        {"path.id": ID},
    ),
    Link("create_key", "revoke_key", {"path.key_id": "$response.body#/key_id"}),
    Link(
        "add_opt_outs",
        "remove_opt_out",
        {"path.phone": "$request.body#/phones/0", "query.company_id": "$response.body#/company_id"},
    ),
    Link("list_contacts", "contact_messages", {"path.id": "$response.body#/contacts/0/id"}),
    Link("list_events", "get_event", {"path.id": "$response.body#/events/0/id"}),
    Link("dead_letters", "replay_dead_letter", {"path.id": "$response.body#/0/id"}),
)


def links_from(operation_id: str) -> dict[str, Any]:
    """The links of ``operation_id``'s success answer, by name (``ToGetCompany``, …)."""
    return {
        "To" + "".join(part.capitalize() for part in link.target.split("_")): link.openapi()
        for link in LINKS
        if link.source == operation_id
    }
