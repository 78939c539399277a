"""Typed cross-service message contracts: queue names, tiers, and how to build each service's messages.

A service never imports another service's actors. To hand work to another service it builds the message
from a :class:`Contract` (actor name, queue, payload type) and enqueues it on the shared broker; only the
consuming service declares the actor. The consuming actor's signature must match the payload's fields
(``tests/test_contracts.py`` checks every pair).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import dramatiq
from dramatiq import Message

WEBHOOKS = "webhooks"
MESSAGES_URGENT = "messages.urgent"
MESSAGES = "messages"
MESSAGES_LOW = "messages.low"
CAMPAIGNS = "campaigns"
DEAD_LETTER = "dead-letter"
MAINTENANCE = "maintenance"
#: The event dispatcher's queue: one pump job per endpoint with due deliveries, and replays.
EVENT_DELIVERY = "event-delivery"
#: The media fetcher's queue: one job per inbound media message (download and keep its file).
MEDIA = "media"

#: Queues whose jobs take seconds (a campaign slice, a sweep): their consumers keep Dramatiq's small prefetch
#: window, so such jobs spread over every process instead of piling up in the first one to fetch.
LONG_JOB_QUEUES = frozenset({CAMPAIGNS, MAINTENANCE})

#: Queues a human (or a CRM waiting for an event) waits on: when empty, their consumers look again at least
#: this often (ms). Dramatiq's idle back-off otherwise grows to the worker timeout (1 s), and an urgent message
#: would wait out that sleep — as would an inbound message on its way to the CRM (``webhooks``: it is the first
#: hop of accepted → event delivered; a lull of a few tens of ms between bursts must not cost a second).
IDLE_POLL_MS: dict[str, int] = {
    MESSAGES_URGENT: 50,
    MESSAGES: 100,
    WEBHOOKS: 25,
    EVENT_DELIVERY: 25,
}

#: Send tier → queue. Campaign traffic is ``low`` so it never delays a human reply.
TIER_QUEUES: dict[str, str] = {"urgent": MESSAGES_URGENT, "normal": MESSAGES, "low": MESSAGES_LOW}

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class ProcessWebhook:
    """Parse and apply one stored webhook row."""

    webhook_id: int


@dataclass(frozen=True, slots=True)
class ProcessWebhooks:
    """Parse and apply several stored webhook rows in one transaction (what one edge group commit stored)."""

    webhook_ids: list[int]


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send one stored outbound message row."""

    message_id: int


@dataclass(frozen=True, slots=True)
class ExpandCampaignBatch:
    """Create the message rows of one slice of a campaign's recipients and enqueue their sends."""

    campaign_id: int
    first_recipient_id: int
    last_recipient_id: int


@dataclass(frozen=True, slots=True)
class RecordDeadLetter:
    """Write one failed job to the dead-letter ledger (and report it to Sentry)."""

    message: dict[str, Any]
    reason: str
    error_type: str
    error_message: str
    traceback: str | None
    attempts: int
    first_failed_at: float | None
    last_failed_at: float


@dataclass(frozen=True, slots=True)
class DeliverEvents:
    """Deliver the due events of one webhook endpoint (its pump; see ``libs.events.dispatch``)."""

    endpoint_id: int


@dataclass(frozen=True, slots=True)
class RedeliverEvent:
    """Deliver one event delivery again with fresh attempts (what replaying its dead letter runs)."""

    delivery_id: int


@dataclass(frozen=True, slots=True)
class FetchMedia:
    """Fetch the file of one inbound media message from its provider and keep it."""

    message_id: int


@dataclass(frozen=True)
class Contract(Generic[P]):
    """How to reach one actor of another service: its name, queue and payload type."""

    actor_name: str
    queue_name: str
    payload: type[P]

    def message(self, payload: P, **options: Any) -> Message[Any]:
        """Build the Dramatiq message carrying ``payload`` as keyword arguments."""
        if not isinstance(payload, self.payload):
            raise TypeError(f"{self.actor_name} takes {self.payload.__name__}, not {type(payload).__name__}")
        return Message(
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            args=(),
            kwargs=dataclasses.asdict(payload),  # type: ignore[call-overload]
            options=options,
        )

    def send(self, payload: P, *, broker: dramatiq.Broker | None = None, delay: int | None = None) -> Message[Any]:
        """Enqueue ``payload`` for the consuming service (on ``broker`` or the process's broker)."""
        return (broker or dramatiq.get_broker()).enqueue(self.message(payload), delay=delay)


PROCESS_WEBHOOK: Contract[ProcessWebhook] = Contract("process_webhook", WEBHOOKS, ProcessWebhook)
PROCESS_WEBHOOKS: Contract[ProcessWebhooks] = Contract("process_webhooks", WEBHOOKS, ProcessWebhooks)
SEND_URGENT: Contract[SendMessage] = Contract("send_message_urgent", MESSAGES_URGENT, SendMessage)
SEND_NORMAL: Contract[SendMessage] = Contract("send_message", MESSAGES, SendMessage)
SEND_LOW: Contract[SendMessage] = Contract("send_message_low", MESSAGES_LOW, SendMessage)
SEND_BY_TIER: dict[str, Contract[SendMessage]] = {
    "urgent": SEND_URGENT,
    "normal": SEND_NORMAL,
    "low": SEND_LOW,
}
EXPAND_CAMPAIGN_BATCH: Contract[ExpandCampaignBatch] = Contract("expand_campaign_batch", CAMPAIGNS, ExpandCampaignBatch)
RECORD_DEAD_LETTER: Contract[RecordDeadLetter] = Contract("record_dead_letter", DEAD_LETTER, RecordDeadLetter)
DELIVER_EVENTS: Contract[DeliverEvents] = Contract("deliver_events", EVENT_DELIVERY, DeliverEvents)
REDELIVER_EVENT: Contract[RedeliverEvent] = Contract("redeliver_event", EVENT_DELIVERY, RedeliverEvent)
FETCH_MEDIA: Contract[FetchMedia] = Contract("fetch_media", MEDIA, FetchMedia)
