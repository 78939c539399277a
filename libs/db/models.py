"""SQLAlchemy 2 typed models: the whole relational state of zapq.

Every lookup a worker makes has an index here; uniqueness constraints carry idempotency (a wamid is stored
once, a campaign recipient gets one message, a dead letter is recorded once per failed message).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base with timezone-aware timestamps and JSONB for dicts."""

    type_annotation_map = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
    }


def _enum(cls: type[enum.Enum]) -> Enum:
    """Store enums as their string values in a VARCHAR (no Postgres ENUM type to migrate)."""
    return Enum(cls, native_enum=False, values_callable=lambda e: [m.value for m in e], length=32)


class Provider(enum.StrEnum):
    """Which kind of WhatsApp connection a company sends through."""

    META = "meta"
    BAILEYS = "baileys"


class ConnectionStatus(enum.StrEnum):
    """Whether the sender may use a connection."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    NEEDS_ATTENTION = "needs_attention"


class Direction(enum.StrEnum):
    """Inbound (from a contact) or outbound (sent by us)."""

    INBOUND = "in"
    OUTBOUND = "out"


class Priority(enum.StrEnum):
    """Send tier; each tier is its own queue."""

    URGENT = "urgent"
    NORMAL = "normal"
    LOW = "low"


class MessageStatus(enum.StrEnum):
    """Life of a message. Outbound: queued → sending → sent → delivered → read (played), or failed."""

    RECEIVED = "received"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WebhookSource(enum.StrEnum):
    """Who posted a webhook."""

    META = "meta"
    BAILEYS = "baileys"


class WebhookStatus(enum.StrEnum):
    """received (durable) → enqueued → processed | failed; or unmatched (applied but for the messages of numbers
    without a connection, kept until one is created: :mod:`libs.ingest.unmatched`) → processed."""

    RECEIVED = "received"
    ENQUEUED = "enqueued"
    PROCESSED = "processed"
    FAILED = "failed"
    UNMATCHED = "unmatched"


class CampaignStatus(enum.StrEnum):
    """draft → scheduled → running ⇄ paused → completed | cancelled."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


def _now() -> Any:
    return func.now()


class Company(Base):
    """A tenant of the CRM."""

    __tablename__ = "companies"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Share of send capacity when campaigns of several companies run at once.
    campaign_weight: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: Whole inbound messages that add / remove the sender to / from the suppression list (``None``: defaults).
    opt_out_keywords: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    opt_in_keywords: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Connection(Base):
    """A WhatsApp number a company sends from: a Meta Cloud API number or a Baileys-bridge instance."""

    __tablename__ = "connections"
    __table_args__ = (
        Index(
            "uq_connections_meta_phone_number_id",
            "phone_number_id",
            unique=True,
            postgresql_where=text("phone_number_id IS NOT NULL"),
        ),
        Index(
            "uq_connections_bridge_instance",
            "bridge_instance",
            unique=True,
            postgresql_where=text("bridge_instance IS NOT NULL"),
        ),
        Index("ix_connections_company_status", "company_id", "status"),
        Index(
            "uq_connections_webhook_key",
            "webhook_key",
            unique=True,
            postgresql_where=text("webhook_key IS NOT NULL"),
        ),
        CheckConstraint("service_window IN ('enforce', 'off')", name="ck_connections_service_window"),
        CheckConstraint("messaging_limit IS NULL OR messaging_limit >= 0", name="ck_connections_messaging_limit"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    provider: Mapped[Provider] = mapped_column(_enum(Provider))
    status: Mapped[ConnectionStatus] = mapped_column(
        _enum(ConnectionStatus), default=ConnectionStatus.ACTIVE, server_default="active"
    )
    status_reason: Mapped[str | None] = mapped_column(Text)
    #: Meta: the phone number id, its WABA and display number; the access token is a secret (every secret of
    #: this table is stored encrypted: a Fernet token, :mod:`libs.secrets`).
    phone_number_id: Mapped[str | None] = mapped_column(String(64))
    waba_id: Mapped[str | None] = mapped_column(String(64))
    display_phone_number: Mapped[str | None] = mapped_column(String(32))
    access_token: Mapped[str | None] = mapped_column(Text)
    #: Baileys bridge (Evolution API): base URL, instance name and API key (a secret).
    bridge_url: Mapped[str | None] = mapped_column(Text)
    bridge_instance: Mapped[str | None] = mapped_column(String(200))
    bridge_api_key: Mapped[str | None] = mapped_column(Text)
    #: Baileys: the public key of the connection's webhook URL (``/webhooks/baileys/{webhook_key}``) and the
    #: secret the bridge sends there (encrypted; shown once, at creation).
    webhook_key: Mapped[str | None] = mapped_column(String(64))
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    #: Messages per second this number may send (Meta default 80, up to 1,000).
    rate_per_second: Mapped[int] = mapped_column(Integer, default=80, server_default="80")
    #: ``enforce``: free-form messages only inside the 24 h customer-service window (Meta); ``off``: test numbers.
    service_window: Mapped[str] = mapped_column(String(16), default="enforce", server_default="enforce")
    #: Meta's messaging limit (:mod:`libs.rules.budget`): the business portfolio whose limit this number shares
    #: (empty: its own), an operator's override of that limit, and what Meta last said of the number — its
    #: limit tier (``TIER_2K``…), quality rating (GREEN/YELLOW/RED), throughput level and last quality event.
    portfolio_id: Mapped[str | None] = mapped_column(String(64))
    messaging_limit: Mapped[int | None] = mapped_column(Integer)
    messaging_tier: Mapped[str | None] = mapped_column(String(32))
    quality_rating: Mapped[str | None] = mapped_column(String(16))
    throughput_level: Mapped[str | None] = mapped_column(String(32))
    quality_event: Mapped[str | None] = mapped_column(String(64))
    quality_updated_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now(), onupdate=_now())


class ServiceWindow(Base):
    """When a contact last wrote to one connection: free-form messages are allowed for 24 h after it."""

    __tablename__ = "service_windows"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    wa_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_inbound_at: Mapped[dt.datetime]


class OptOut(Base):
    """A number that asked a company not to message it (the company's suppression list)."""

    __tablename__ = "opt_outs"

    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: ``api``, ``cli``, ``csv`` or ``keyword`` (an inbound opt-out keyword).
    source: Mapped[str] = mapped_column(String(32), default="api", server_default="api")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Contact(Base):
    """A WhatsApp user known to a company, by wa_id."""

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("company_id", "wa_id", name="uq_contacts_company_wa_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    wa_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now(), onupdate=_now())


class Message(Base):
    """One WhatsApp message, inbound or outbound, with a timestamp per state."""

    __tablename__ = "messages"
    __table_args__ = (
        #: A provider id is issued per number: the sender's outbound row and the receiving zapq company's inbound
        #: copy share it, each under its own connection (statuses are looked up the same way).
        Index("uq_messages_connection_external_id", "connection_id", "external_id", unique=True),
        Index(
            "uq_messages_idempotency",
            "company_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "uq_messages_campaign_recipient",
            "campaign_id",
            "recipient",
            unique=True,
            postgresql_where=text("campaign_id IS NOT NULL"),
        ),
        Index("ix_messages_company_created", "company_id", "created_at"),
        #: Conversations: a company's messages with one contact, by id.
        Index("ix_messages_company_recipient", "company_id", "recipient", "id"),
        Index("ix_messages_campaign_status", "campaign_id", "status"),
        #: The console's search by provider id alone (wamid), whatever the connection.
        Index("ix_messages_external_id", "external_id", postgresql_where=text("external_id IS NOT NULL")),
        #: Messages failed by a WhatsApp rule, counted per reason over a recent window.
        Index("ix_messages_rule_failures", "failed_at", postgresql_where=text("failure_reason IS NOT NULL")),
        #: Inbound media messages whose file is neither stored nor given up (the media sweep; migration 0013).
        Index(
            "ix_messages_media_pending",
            "created_at",
            postgresql_where=text(
                "direction = 'in' AND type IN ('image', 'video', 'audio', 'document', 'sticker', 'imageMessage', "
                "'videoMessage', 'audioMessage', 'documentMessage', 'documentWithCaptionMessage', 'stickerMessage') "
                "AND NOT payload ? 'stored_media' AND NOT payload ? 'media_error'"
            ),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    direction: Mapped[Direction] = mapped_column(_enum(Direction))
    priority: Mapped[Priority] = mapped_column(_enum(Priority), default=Priority.NORMAL, server_default="normal")
    status: Mapped[MessageStatus] = mapped_column(_enum(MessageStatus))
    #: The other party's number (recipient of an outbound message, sender of an inbound one).
    recipient: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(32), default="text", server_default="text")
    body: Mapped[str | None] = mapped_column(Text)
    #: Template name/language/components, media ids, reaction target, raw provider extras.
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    #: The provider's id: Meta wamid or Baileys key.id. Unique per connection, so an inbound message is stored
    #: once per number that received it.
    external_id: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(Text)
    #: The WhatsApp rule a failed message broke (``outside_service_window``, ``marketing_limit``, …).
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Earlier failures of a message that was retried (each: status, error, attempts, when, how it was retried).
    history: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'::jsonb"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    queued_at: Mapped[dt.datetime | None]
    sending_at: Mapped[dt.datetime | None]
    sent_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    read_at: Mapped[dt.datetime | None]
    failed_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now(), onupdate=_now())
    #: The W3C context of the traced send that got its provider id: its status spans join that trace (migration
    #: 0017).
    traceparent: Mapped[str | None] = mapped_column(Text)


class PendingStatus(Base):
    """A status webhook that arrived before its outbound message was known; applied when it appears."""

    __tablename__ = "pending_statuses"
    __table_args__ = (
        Index("uq_pending_statuses_connection_external_status", "connection_id", "external_id", "status", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    #: The connection whose number reported it (``NULL``: kept before statuses were scoped, any connection).
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(200), index=True)
    #: Our message id from ``biz_opaque_callback_data``, when Meta echoed it.
    client_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[dt.datetime | None]
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_title: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class Webhook(Base):
    """A raw webhook exactly as received, durable before the sender is answered."""

    __tablename__ = "webhooks"
    __table_args__ = (
        Index("uq_webhooks_dedup_key", "source", "dedup_key", unique=True),
        Index(
            "ix_webhooks_unfinished",
            "received_at",
            postgresql_where=text("status IN ('received', 'enqueued')"),
        ),
        #: Kept webhooks: counted, and found by the key of a connection just created.
        Index("ix_webhooks_unmatched", "id", postgresql_where=text("status = 'unmatched'")),
        Index(
            "ix_webhooks_unmatched_keys",
            "unmatched",
            postgresql_using="gin",
            postgresql_where=text("status = 'unmatched'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[WebhookSource] = mapped_column(_enum(WebhookSource))
    #: sha256 of the raw body: an identical redelivery maps to the same row.
    dedup_key: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[WebhookStatus] = mapped_column(
        _enum(WebhookStatus), default=WebhookStatus.RECEIVED, server_default="received"
    )
    error: Mapped[str | None] = mapped_column(Text)
    #: Items found in the body (messages + statuses + events) once processed.
    item_count: Mapped[int | None] = mapped_column(Integer)
    #: The phone_number_ids (Meta) or bridge instances (Baileys) whose messages in this body had no connection
    #: and are still to be applied (``NULL``: nothing kept).
    unmatched: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    received_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    enqueued_at: Mapped[dt.datetime | None]
    processed_at: Mapped[dt.datetime | None]
    #: The W3C context of the traced request that stored it: its apply joins that trace (migration 0016).
    traceparent: Mapped[str | None] = mapped_column(Text)


class Campaign(Base):
    """A bulk send: content × recipients, with exact counters."""

    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_due", "status", "start_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[CampaignStatus] = mapped_column(
        _enum(CampaignStatus), default=CampaignStatus.DRAFT, server_default="draft"
    )
    #: ``text`` (body with ``{var}`` placeholders), ``template`` (name, language, components) or a media kind
    #: (``image``, ``video``, ``audio``, ``document``, ``sticker``: ``content`` + ``body`` as its caption).
    content_type: Mapped[str] = mapped_column(String(16), default="text", server_default="text")
    body: Mapped[str | None] = mapped_column(Text)
    template: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: A media kind's reference (``{"link"|"id", "filename"?, "voice"?}``), without its caption (``body``).
    content: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    start_at: Mapped[dt.datetime | None]
    recipients_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    queued_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sent_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivered_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    read_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Recipients skipped because they are on the company's suppression list (their rows are ``cancelled``).
    suppressed_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    #: Why the system paused it (a template paused or disabled by Meta, a quality flag); ``None`` otherwise.
    status_reason: Mapped[str | None] = mapped_column(Text)


class CampaignRecipient(Base):
    """One imported recipient row of a campaign, with its template variables."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (UniqueConstraint("campaign_id", "recipient", name="uq_campaign_recipients_campaign_recipient"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(String(32))
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    expanded: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class DeadLetter(Base):
    """The ledger of jobs that failed for good, kept ``dead_letter_retention_days`` and replayable."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("uq_dead_letters_message_id", "message_id", unique=True),
        Index("ix_dead_letters_queue_created", "queue_name", "created_at"),
        Index("ix_dead_letters_created", "created_at"),
        #: The send sweep's question "is this message's job a dead letter?" (``libs.sending.sweep``).
        Index(
            "ix_dead_letters_send_message",
            text("(kwargs ->> 'message_id')"),
            postgresql_where=text("queue_name IN ('messages.urgent', 'messages', 'messages.low')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    #: Dramatiq message id of the failed job (stable across retries).
    message_id: Mapped[str] = mapped_column(String(64))
    queue_name: Mapped[str] = mapped_column(String(100))
    actor_name: Mapped[str] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The original message (``Message.asdict()``), what replay re-enqueues.
    message: Mapped[dict[str, Any]] = mapped_column()
    reason: Mapped[str] = mapped_column(String(32))
    error_type: Mapped[str] = mapped_column(String(200))
    error_message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[dt.datetime | None]
    last_failed_at: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    replay_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    replayed_at: Mapped[dt.datetime | None]
    replayed_message_id: Mapped[str | None] = mapped_column(String(64))


class Event(Base):
    """A fact for the CRM (the outbox): written in the same transaction as the change it describes.

    ``seq`` (global) and ``company_seq`` (per company, gap-free) are assigned when the event is *published*
    (:mod:`libs.events.publish`): only published events are delivered or shown in the feed, in ``seq`` order,
    which is the order in which they became visible.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_unpublished", "id", postgresql_where=text("seq IS NULL")),
        Index("uq_events_seq", "seq", unique=True),
        Index("ix_events_company_seq", "company_id", "seq"),
        Index("ix_events_created", "created_at", postgresql_using="brin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    #: Ordering key: events of one conversation are delivered in order (``contact:<wa_id>``, ``campaign:<id>``…).
    conversation: Mapped[str] = mapped_column(String(120))
    occurred_at: Mapped[dt.datetime]
    data: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    seq: Mapped[int | None] = mapped_column(BigInteger)
    company_seq: Mapped[int | None] = mapped_column(BigInteger)
    published_at: Mapped[dt.datetime | None]
    #: The W3C context of the traced span that wrote the event: its deliveries join that trace (migration 0015).
    traceparent: Mapped[str | None] = mapped_column(Text)


class EventCounter(Base):
    """The last sequence number handed out: per company, and globally (``company_id`` 0)."""

    __tablename__ = "event_counters"

    company_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class WebhookEndpoint(Base):
    """A company's URL that receives its events, signed per Standard Webhooks."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_company", "company_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    #: Event types delivered (an empty list: every type).
    event_types: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'::jsonb"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[dt.datetime | None]
    #: ``whsec_…``; after a rotation the previous one keeps signing (second signature) until it expires.
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[dt.datetime | None]
    rate_per_second: Mapped[int] = mapped_column(Integer, default=200, server_default="200")
    max_in_flight: Mapped[int] = mapped_column(Integer, default=64, server_default="64")
    failing_since: Mapped[dt.datetime | None]
    last_success_at: Mapped[dt.datetime | None]
    last_failure_at: Mapped[dt.datetime | None]
    last_failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now(), onupdate=_now())


class EventDelivery(Base):
    """One event for one endpoint: waiting (behind its conversation) → pending → delivering → delivered | failed."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        Index("uq_event_deliveries_event_endpoint", "event_id", "endpoint_id", unique=True),
        Index("ix_event_deliveries_due", "endpoint_id", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index(
            "ix_event_deliveries_open",
            "endpoint_id",
            "conversation",
            "seq",
            postgresql_where=text("state IN ('waiting', 'pending', 'delivering')"),
        ),
        Index("ix_event_deliveries_endpoint_seq", "endpoint_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    conversation: Mapped[str] = mapped_column(String(120))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    lease_until: Mapped[dt.datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    delivered_at: Mapped[dt.datetime | None]


class DeliveryAttempt(Base):
    """One HTTP attempt of a delivery: status or error, latency, the start of the response."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        Index("ix_delivery_attempts_delivery", "delivery_id"),
        Index("ix_delivery_attempts_endpoint_at", "endpoint_id", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("event_deliveries.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    response_excerpt: Mapped[str | None] = mapped_column(Text)


class ApiKey(Base):
    """An API key ``zq_<key_id>_<secret>``: only the SHA-256 of its secret is kept (:mod:`libs.access`)."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("uq_api_keys_key_id", "key_id", unique=True),
        Index("ix_api_keys_company", "company_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: ``None``: a key for every company (operators, admins).
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    last_used_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class AuditEntry(Base):
    """A change made through the API or the CLI: when, by whom (``key:<key_id>``, ``admin-token``, ``cli``), what."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_company_at", "company_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    actor: Mapped[str] = mapped_column(String(64))
    company_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(120))
    target: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None]


class WhatsAppTemplate(Base):
    """One template of a Meta connection's WhatsApp Business Account, as Meta last reported it."""

    __tablename__ = "whatsapp_templates"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    language: Mapped[str] = mapped_column(String(16), primary_key=True)
    #: Meta's id of the template.
    template_id: Mapped[str | None] = mapped_column(String(64))
    #: APPROVED, PENDING, REJECTED, PAUSED, DISABLED, … (Meta's words, kept as sent).
    status: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    #: Meta's components (``None``: known from a webhook only, until the next sync).
    components: Mapped[list[Any] | None] = mapped_column(JSONB)
    #: Meta's reason for its last status change (a rejection's or a pause's).
    reason: Mapped[str | None] = mapped_column(Text)
    synced_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=_now())


class TemplateCatalogue(Base):
    """Per Meta connection: when its template catalogue last synced in full (never: sends are not validated)."""

    __tablename__ = "template_catalogues"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True)
    synced_at: Mapped[dt.datetime | None]
    template_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempted_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    last_error: Mapped[str | None] = mapped_column(Text)


class Media(Base):
    """A media file zapq keeps (an upload to send, or an inbound message's file fetched from the provider).

    The bytes live in the media storage (:mod:`libs.media.storage`) under ``storage_key``; this row says what
    they are. ``provider_ids`` caches, per connection, the provider's id of the file once uploaded there
    (``{"<connection_id>": {"id": …, "expires_at": …}}``: Meta keeps an upload 30 days).
    """

    __tablename__ = "media"
    __table_args__ = (
        #: One stored file per inbound message: fetching it twice keeps the first.
        Index("uq_media_message", "message_id", unique=True, postgresql_where=text("message_id IS NOT NULL")),
        Index("ix_media_expires_at", "expires_at"),
        Index("ix_media_company_created", "company_id", "created_at"),
    )

    #: ``med_`` and 32 hex digits.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id", ondelete="CASCADE"))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="SET NULL"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    direction: Mapped[Direction] = mapped_column(_enum(Direction))
    mime_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str] = mapped_column(Text)
    provider_ids: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=_now())
    expires_at: Mapped[dt.datetime]
