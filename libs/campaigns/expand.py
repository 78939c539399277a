"""Fan-out of one slice of a campaign's recipients into message rows and ``messages.low`` sends."""

from __future__ import annotations

import logging
import string
from typing import Any

import redis
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from libs import contracts
from libs.db.engine import Database
from libs.db.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    Direction,
    Message,
    MessageStatus,
    Priority,
)
from libs.enqueue import enqueue_many
from libs.errors import PermanentError, RecordNotFoundError

logger = logging.getLogger(__name__)


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def render(body: str, variables: dict[str, Any]) -> str:
    """``Hi {name}`` with the recipient's variables; a missing variable renders empty."""
    return string.Formatter().vformat(body, (), _Defaulting(variables))


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


def expand_batch(db: Database, client: redis.Redis, namespace: str, batch: contracts.ExpandCampaignBatch) -> int:
    """Create the slice's message rows (once per recipient) and enqueue every still-queued one.

    Safe to run twice: rows are unique per campaign + recipient, and a send enqueued twice is claimed once.
    Returns how many rows this call created.
    """
    with db.session() as session:
        campaign = session.get(Campaign, batch.campaign_id)
        if campaign is None:
            raise RecordNotFoundError(f"campaign {batch.campaign_id} does not exist")
        if campaign.status == CampaignStatus.CANCELLED:
            return 0
        recipients = session.execute(
            select(CampaignRecipient.recipient, CampaignRecipient.variables).where(
                CampaignRecipient.campaign_id == batch.campaign_id,
                CampaignRecipient.id >= batch.first_recipient_id,
                CampaignRecipient.id <= batch.last_recipient_id,
            )
        ).all()
        rows = []
        for recipient, variables in recipients:
            if campaign.content_type == "template":
                if not campaign.template:
                    raise PermanentError(f"campaign {campaign.id} has no template")
                body, kind, payload = None, "template", _template_payload(campaign.template, variables)
            else:
                body, kind, payload = render(campaign.body or "", variables), "text", {}
            rows.append(
                {
                    "company_id": campaign.company_id,
                    "connection_id": campaign.connection_id,
                    "campaign_id": campaign.id,
                    "direction": Direction.OUTBOUND,
                    "priority": Priority.LOW,
                    "status": MessageStatus.QUEUED,
                    "recipient": recipient,
                    "type": kind,
                    "body": body,
                    "payload": payload,
                }
            )
        created = 0
        if rows:
            stmt = (
                insert(Message)
                .on_conflict_do_nothing(
                    index_elements=[Message.campaign_id, Message.recipient],
                    index_where=Message.campaign_id.is_not(None),
                )
                .returning(Message.id)
            )
            created = len(session.scalars(stmt.values(rows)).all())
            if created:
                session.execute(
                    update(Campaign)
                    .where(Campaign.id == campaign.id)
                    .values(queued_count=Campaign.queued_count + created)
                )
    with db.session() as session:
        queued = session.scalars(
            select(Message.id).where(
                Message.campaign_id == batch.campaign_id,
                Message.status == MessageStatus.QUEUED,
                Message.recipient.in_([r for r, _ in recipients]),
            )
        ).all()
    enqueue_many(client, namespace, (contracts.SEND_LOW.message(contracts.SendMessage(i)) for i in queued))
    return created
