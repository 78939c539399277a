"""Fan-out of one slice of a campaign's recipients into message rows and ``messages.low`` sends (via the
company's fair lane, :mod:`libs.campaigns.lanes`).

Recipients on the company's suppression list (:mod:`libs.rules.optouts`) get a ``cancelled`` row with reason
``opted_out`` and no send, in the same insert (a set-based anti-join, not a lookup per row), and are counted in
the campaign's ``suppressed_count``. Sends beyond the portfolio's messaging limit wait for budget
(:mod:`libs.rules.budget`)."""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
import redis
from dramatiq import Message

from libs import contracts
from libs.campaigns import store
from libs.campaigns.lanes import Lanes
from libs.companies import store as companies
from libs.db.engine import Database
from libs.db.models import CampaignStatus
from libs.errors import PermanentError, RecordNotFoundError
from libs.messages import kinds
from libs.messages import store as messages
from libs.rules import limits, limits_store
from libs.rules.budget import Budget, Target
from libs.rules.store import WINDOW_SECONDS

logger = logging.getLogger(__name__)


#: One token of campaign text: a literal brace (``{{``/``}}``), a ``{name}`` placeholder, or anything else in braces
#: (what ``str.format`` would read as a field, one nested level as in ``{a:{w}}``; a lone ``}``; an unclosed ``{``).
TOKEN = re.compile(r"(?P<escape>\{\{|\}\})|\{(?P<name>[^\W\d]\w*)\}|(?P<other>\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}?|\})")


def bad_placeholder(body: str) -> str | None:
    """The first brace sequence of ``body`` that is neither ``{name}`` nor a literal ``{{``/``}}``; None if none."""
    for match in TOKEN.finditer(body):
        if match["other"] is not None:
            return match["other"]
    return None


def render(body: str, variables: dict[str, Any]) -> str:
    """``Hi {name}`` with the recipient's variables; a missing variable renders empty.

    Campaign text is data: only ``{name}`` is substituted, ``{{``/``}}`` are literal braces, and anything else
    (a format spec, a conversion, an index, in bodies stored before the API refused them) is kept as written —
    nothing is ever formatted, so a hostile CSV value cannot allocate or fail.
    """

    def fill(match: re.Match[str]) -> str:
        if match["name"] is not None:
            return str(variables.get(match["name"], ""))
        if match["escape"] is not None:
            return match["escape"][0]
        return match[0]

    return TOKEN.sub(fill, body)


def _template_payload(template: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    params = [{"type": "text", "text": str(variables.get(name, ""))} for name in template.get("variables", [])]
    components = list(template.get("components") or [])
    if params:
        components.append({"type": "body", "parameters": params})
    return {
        "template": {
            "name": template["name"],
            "language": template.get("language", "en_US"),
            "components": components,
        }
    }


def _send(message_id: int) -> Message[Any]:
    return contracts.SEND_LOW.message(contracts.SendMessage(message_id))


def _media_payload(kind: str, content: dict[str, Any], caption: str | None) -> dict[str, Any]:
    """A media message's payload: the campaign's reference with the recipient's rendered caption."""
    return {kind: {**content, "caption": caption} if caption else dict(content)}


def _targets(session: Any, ids: list[int]) -> list[Target]:
    """The sends as the budget sees them (recipient, window open), in the slice's own transaction."""
    return [Target(*row) for row in limits_store.targets(session, ids, WINDOW_SECONDS)] if ids else []


def expand_batch(
    db: Database,
    client: redis.Redis,
    lanes: Lanes,
    batch: contracts.ExpandCampaignBatch,
    budget: Budget | None = None,
) -> int:
    """Create the slice's message rows (once per recipient) and enqueue every still-queued one — those the
    portfolio's messaging-limit budget admits (:mod:`libs.rules.budget`, one Redis call for the slice); the rest
    wait for budget.

    Safe to run twice: rows are unique per campaign + recipient, a send enqueued twice is claimed once, and a
    recipient admitted twice is counted once. Returns how many rows this call created.
    """
    budget = budget or Budget(lanes.namespace)
    with db.session() as session:
        campaign = store.for_expansion(session, batch.campaign_id)
        if campaign is None:
            raise RecordNotFoundError(f"campaign {batch.campaign_id} does not exist")
        if campaign["status"] not in (CampaignStatus.RUNNING, CampaignStatus.PAUSED, CampaignStatus.COMPLETED):
            return 0  # cancelled, or a start whose transaction did not commit: nothing to create
        if campaign["content_type"] == "template" and not campaign["template"]:
            raise PermanentError(f"campaign {campaign['id']} has no template")
        recipients = store.recipients_in_slice(
            session, batch.campaign_id, batch.first_recipient_id, batch.last_recipient_id
        )
        numbers = [recipient for recipient, _ in recipients]
        kind = campaign["content_type"]
        if kind == "template":
            bodies: list[str | None] = [None] * len(recipients)
            payloads = [orjson.dumps(_template_payload(campaign["template"], v)).decode() for _, v in recipients]
        elif kind in kinds.MEDIA_KINDS:
            caption = campaign["body"]
            bodies = [render(caption, v) if caption else None for _, v in recipients]
            payloads = [orjson.dumps(_media_payload(kind, campaign["content"] or {}, b)).decode() for b in bodies]
        else:
            bodies = [render(campaign["body"] or "", variables) for _, variables in recipients]
            payloads = ["{}"] * len(recipients)
        ids: list[int] = []
        suppressed = 0
        if numbers:  # numbers on the suppression list are skipped in the same statement (an anti-join)
            ids, suppressed = messages.insert_campaign_slice(
                session,
                {
                    "company_id": campaign["company_id"],
                    "connection_id": campaign["connection_id"],
                    "campaign_id": campaign["id"],
                    "type": campaign["content_type"],
                    "recipients": numbers,
                    "bodies": bodies,
                    "payloads": payloads,
                },
            )
        created = len(ids)
        if created or suppressed:
            store.add_queued(session, campaign["id"], created, suppressed)
        company_id = campaign["company_id"]
        weight = companies.campaign_weight(session, company_id)
        portfolio = limits.resolve(limits_store.portfolio(session, campaign["connection_id"]), budget.limit_override)
        repeat = created + suppressed < len(numbers)
        targets = _targets(session, ids) if portfolio is not None and not repeat else []
    if repeat:  # some rows existed; their sends may never have been enqueued
        with db.session() as session:
            ids = messages.queued_in_slice(session, batch.campaign_id, numbers)
            targets = _targets(session, ids) if portfolio is not None else []
    if portfolio is not None and ids:
        admission = budget.admit(client, portfolio.key, portfolio.limit, campaign["id"], company_id, targets, _send)
        ids = admission.admitted
        if admission.waiting:
            logger.info(
                "campaign %s: %d send(s) wait for tier budget (portfolio %s, limit %d)",
                campaign["id"],
                len(admission.waiting),
                portfolio.key,
                portfolio.limit,
            )
    sends = (_send(i) for i in ids)
    lanes.push(client, company_id, sends, weight=weight)
    lanes.feed(client)
    return created
