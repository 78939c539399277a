"""Pydantic models of the API's request bodies (validation, and the OpenAPI schemas)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from libs.access.keys import InvalidKeyRequestError, check_scopes
from libs.api.http import MAX_ID
from libs.api.kinds import (
    MAX_CAPTION,
    AudioIn,
    ContactIn,
    DocumentIn,
    ImageIn,
    InteractiveIn,
    LocationIn,
    ReactionIn,
    StickerIn,
    TemplateComponent,
    VideoIn,
    dump,
)
from libs.campaigns.expand import bad_placeholder

NON_DIGITS = re.compile(r"\D+")
#: What a phone number field accepts: 7 to 15 digits, anything else around them (``+55 (11) 98888-7777``).
PHONE_PATTERN = r"^\D*(?:\d\D*){7,15}$"
#: C0 and C1 control characters (NUL included): no keyword holds one.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KEYWORD_MAX = 64


def normalize_phone(value: str) -> str:
    """``+55 (11) 98888-7777`` → ``5511988887777``; 7 to 15 digits (E.164) or ``ValueError``."""
    digits = NON_DIGITS.sub("", value)
    if not 7 <= len(digits) <= 15:
        raise ValueError("a phone number needs 7 to 15 digits (E.164, country code first)")
    return digits


#: A Meta number's business portfolio (connections create and patch alike).
PortfolioId = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=64,
        description="meta: the business portfolio whose messaging limit this number shares (empty: its own)",
    ),
]
#: An operator's override of a portfolio's messaging limit (connections create and patch alike).
MessagingLimit = Annotated[
    int | None,
    Field(
        ge=0,
        le=100_000_000,
        description="meta: override of the portfolio's messaging limit (new recipients per 24 h); null: Meta's tier",
    ),
]


#: A date-time given as text: ``2030-01-02T03:04:05Z`` (without an offset: UTC). Not a number or a bare date,
#: which pydantic's lax parsing would read as a Unix time or midnight.
DATE_TIME_TEXT = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")


def _date_time_text(value: object) -> object:
    if not isinstance(value, str) or not DATE_TIME_TEXT.match(value):
        raise ValueError("a date-time is text like 2030-01-02T03:04:05Z")
    return value


DateTime = Annotated[dt.datetime, BeforeValidator(_date_time_text), Field(strict=False)]


def _stripped(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return [_stripped(item) for item in value]
    return value


class _Strict(BaseModel):
    """A request body: no unknown fields, no type coercion (``"1"`` is not an integer, ``"yes"`` not a boolean),
    and text stripped of surrounding whitespace *after* the checks, so the published lengths are the real ones
    (a required text field holds a non-blank character: see :mod:`libs.api.schema_rules`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral(cls, data: Any) -> Any:
        """``1.0`` is an integer in JSON Schema (and JSON): it reaches an ``int`` field as ``1``."""
        if isinstance(data, dict):
            return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _strip(self) -> Any:
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            stripped = _stripped(value)
            if stripped == "" and value != "" and _min_length(field.metadata) > 0:
                raise ValueError(f"{name} is blank")
            if stripped != value:
                object.__setattr__(self, name, stripped)  # not pydantic's setattr: that marks the field as given
        return self


def _min_length(metadata: list[Any]) -> int:
    return max((m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)), default=0)


class TemplateIn(_Strict):
    """An approved WhatsApp template; ``components`` fill its header (text or media), body and button
    (``quick_reply`` payload, ``url`` suffix) parameters in Meta's shape."""

    name: str = Field(min_length=1, max_length=512)
    language: str = Field(default="en_US", min_length=2, max_length=16)
    components: list[TemplateComponent] = Field(default_factory=list, max_length=20)

    def content(self) -> dict[str, Any]:
        """As stored and sent: ``{"name", "language", "components"}`` (unset fields left out)."""
        return {"name": self.name, "language": self.language, "components": dump(list(self.components))}


class ReplyTo(_Strict):
    """The message a new one quotes (Meta ``context``)."""

    message_id: str = Field(min_length=1, max_length=200, description="its wamid (Meta) or key id (Baileys)")


#: The content fields of ``MessageIn``, one per kind besides ``text``: exactly one is given.
KIND_FIELDS = (
    "template",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "interactive",
    "location",
    "contacts",
    "reaction",
)


class MessageIn(_Strict):
    """``POST /api/messages``: one outbound message of one kind — ``text`` or exactly one of the kind objects
    (Meta's wire shape; see the README's "Message kinds") — optionally quoting a message (``context``)."""

    company_id: int = Field(gt=0, le=MAX_ID)
    to: str = Field(description="recipient phone number (7 to 15 digits); normalised to digits")
    text: str | None = Field(default=None, min_length=1, max_length=4096)
    template: TemplateIn | None = None
    image: ImageIn | None = None
    video: VideoIn | None = None
    audio: AudioIn | None = None
    document: DocumentIn | None = None
    sticker: StickerIn | None = None
    interactive: InteractiveIn | None = None
    location: LocationIn | None = None
    contacts: list[ContactIn] | None = Field(default=None, min_length=1, max_length=5)
    reaction: ReactionIn | None = None
    context: ReplyTo | None = Field(default=None, description="reply to (quote) this message")
    priority: Literal["urgent", "normal", "low"] = "normal"
    connection_id: int | None = Field(
        default=None, gt=0, le=MAX_ID, description="default: the company's first active one"
    )
    transactional: bool = Field(
        default=False,
        description="a reply inside the customer-service window: allowed to a number on the opt-out list",
    )

    @field_validator("to")
    @classmethod
    def _digits(cls, value: str) -> str:
        return normalize_phone(value)

    @model_validator(mode="after")
    def _one_content(self) -> MessageIn:
        given = [name for name in ("text", *KIND_FIELDS) if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text or template (or one of {', '.join(KIND_FIELDS[1:])})")
        if self.reaction is not None and self.context is not None:
            raise ValueError("a reaction names its message in reaction.message_id, not context")
        return self

    @property
    def kind(self) -> str:
        """The message's kind: ``text`` or the one kind field given."""
        return next((name for name in KIND_FIELDS if getattr(self, name) is not None), "text")

    def content(self) -> Any:
        """The kind's content as stored and sent (``None`` for text: its body is ``text``)."""
        if self.template is not None:
            return self.template.content()
        value = getattr(self, self.kind) if self.kind != "text" else None
        return None if value is None else dump(value)


class OptOutIn(_Strict):
    """``POST /api/opt-outs``: numbers to put on a company's opt-out list."""

    company_id: int = Field(gt=0, le=MAX_ID)
    phones: list[str] = Field(
        min_length=1, max_length=10_000, description="phone numbers (7 to 15 digits each); normalised to digits"
    )
    source: Literal["api", "cli"] = "api"

    @field_validator("phones")
    @classmethod
    def _digits(cls, values: list[str]) -> list[str]:
        return sorted({normalize_phone(value) for value in values})


class TemplateSyncIn(_Strict):
    """``POST /api/templates/sync``: one connection, or every Meta connection of a company (or of all)."""

    connection_id: int | None = Field(default=None, gt=0, le=MAX_ID, description="just this connection")
    company_id: int | None = Field(default=None, gt=0, le=MAX_ID, description="every Meta connection of it")

    @model_validator(mode="after")
    def _one(self) -> TemplateSyncIn:
        if self.connection_id is not None and self.company_id is not None:
            raise ValueError("give connection_id or company_id, not both")
        return self


class CompanyIn(_Strict):
    """``POST /api/companies``."""

    name: str = Field(min_length=1, max_length=200)
    campaign_weight: int = Field(default=1, ge=1, le=100)
    opt_out_keywords: list[str] | None = Field(
        default=None,
        max_length=50,
        description="whole inbound messages that put the sender on the opt-out list (default: STOP, PARAR, …)",
    )
    opt_in_keywords: list[str] | None = Field(
        default=None, max_length=50, description="whole inbound messages that take the sender off it (START, …)"
    )

    @field_validator("opt_out_keywords", "opt_in_keywords")
    @classmethod
    def _keywords(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and any(len(v) > KEYWORD_MAX or not v.strip() for v in values):
            raise ValueError(f"each keyword is 1 to {KEYWORD_MAX} characters, not blank")
        if values is not None and any(CONTROL_CHARACTER.search(v) for v in values):
            raise ValueError("a keyword is printable text (no control characters)")
        return values


META_FIELDS = ("phone_number_id", "access_token", "waba_id", "display_phone_number", "portfolio_id", "messaging_limit")
BAILEYS_FIELDS = ("bridge_url", "bridge_instance", "bridge_api_key")
#: The fields a meta connection needs (a baileys one needs every one of :data:`BAILEYS_FIELDS`).
META_REQUIRED = ("phone_number_id", "access_token")


class ConnectionIn(_Strict):
    """``POST /api/connections``: a Meta Cloud API number or a Baileys-bridge (Evolution API) instance."""

    company_id: int = Field(gt=0, le=MAX_ID)
    provider: Literal["meta", "baileys"]
    name: str = Field(default="", max_length=200)
    phone_number_id: str | None = Field(default=None, min_length=1, max_length=64)
    access_token: str | None = Field(default=None, min_length=1, description="secret: never returned")
    waba_id: str | None = Field(default=None, max_length=64)
    display_phone_number: str | None = Field(default=None, max_length=32)
    bridge_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    bridge_instance: str | None = Field(default=None, min_length=1, max_length=200)
    bridge_api_key: str | None = Field(default=None, min_length=1, description="secret: never returned")
    rate_per_second: int = Field(default=80, ge=1, le=1000)
    service_window: Literal["enforce", "off"] = Field(
        default="enforce",
        description="enforce: free-form messages only within 24 h of the contact's last message (Meta's rule); "
        "off: for test numbers and load tests. Baileys connections are exempt either way.",
    )
    portfolio_id: PortfolioId = None
    messaging_limit: MessagingLimit = None

    @model_validator(mode="after")
    def _provider_fields(self) -> ConnectionIn:
        own, other = (META_FIELDS, BAILEYS_FIELDS) if self.provider == "meta" else (BAILEYS_FIELDS, META_FIELDS)
        required = META_REQUIRED if self.provider == "meta" else BAILEYS_FIELDS
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.provider} connection needs {', '.join(missing)}")
        stray = [name for name in other if getattr(self, name) is not None]
        if stray:
            raise ValueError(f"{', '.join(stray)} do not apply to a {self.provider} connection")
        assert own
        return self


P = TypeVar("P", bound=BaseModel)


def _changes(patch: P) -> P:
    """A PATCH body changes at least one field, and sets none to null (the schema says the same:
    ``minProperties: 1``, no null type, see :mod:`libs.api.schema_rules`)."""
    if not patch.model_fields_set:
        raise ValueError("nothing to change")
    nulls = sorted(name for name in patch.model_fields_set if getattr(patch, name) is None)
    if nulls:
        raise ValueError(f"{', '.join(nulls)}: a field given to PATCH is not null")
    return patch


class ConnectionPatch(_Strict):
    """``PATCH /api/connections/{id}``: only the fields given change; ``status: active`` reactivates."""

    name: str | None = Field(default=None, max_length=200)
    access_token: str | None = Field(default=None, min_length=1)
    waba_id: str | None = Field(default=None, max_length=64)
    display_phone_number: str | None = Field(default=None, max_length=32)
    bridge_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    bridge_api_key: str | None = Field(default=None, min_length=1)
    rate_per_second: int | None = Field(default=None, ge=1, le=1000)
    service_window: Literal["enforce", "off"] | None = None
    portfolio_id: PortfolioId = None
    messaging_limit: MessagingLimit = None
    status: Literal["active"] | None = None

    @model_validator(mode="after")
    def _something(self) -> ConnectionPatch:
        return _changes(self)


class CampaignTemplateIn(TemplateIn):
    """A campaign's template; ``variables`` name the CSV columns filling the body's parameters, in order."""

    variables: list[str] = Field(default_factory=list)


#: The media kinds a campaign may send (its ``text`` is then the caption, with ``{var}`` placeholders).
CAMPAIGN_MEDIA = ("image", "video", "audio", "document", "sticker")


class CampaignIn(_Strict):
    """``POST /api/campaigns``: a text body with ``{var}`` placeholders, a template, or one medium (``image``,
    ``video``, ``audio``, ``document``, ``sticker``: by ``link`` or ``id``, its caption in ``text``)."""

    company_id: int = Field(gt=0, le=MAX_ID)
    connection_id: int = Field(gt=0, le=MAX_ID)
    name: str = Field(min_length=1, max_length=200)
    text: str | None = Field(default=None, min_length=1, max_length=4096)
    template: CampaignTemplateIn | None = None
    image: ImageIn | None = None
    video: VideoIn | None = None
    audio: AudioIn | None = None
    document: DocumentIn | None = None
    sticker: StickerIn | None = None

    @field_validator("text")
    @classmethod
    def _placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            bad = bad_placeholder(value)
            if bad is not None:
                raise ValueError(
                    f"placeholder {bad} must be a plain name like {{name}} (write {{{{ and }}}} for braces)"
                )
        return value

    @model_validator(mode="after")
    def _one_content(self) -> CampaignIn:
        media = [name for name in CAMPAIGN_MEDIA if getattr(self, name) is not None]
        if len(media) > 1 or (media and self.template is not None):
            raise ValueError("give exactly one of text or template, or one medium (its caption in text)")
        if media:
            medium = getattr(self, media[0])
            if getattr(medium, "caption", None) is not None:
                raise ValueError(
                    f"a campaign's caption is its text (with {{var}} placeholders), not {media[0]}.caption"
                )
            if self.text is not None and media[0] in ("audio", "sticker"):
                raise ValueError(f"{media[0]} takes no caption: leave text out")
            if self.text is not None and len(self.text) > MAX_CAPTION:
                raise ValueError(f"text is the caption here: at most {MAX_CAPTION} characters")
        elif (self.text is None) == (self.template is None):
            raise ValueError("give exactly one of text or template (or one medium)")
        return self

    @property
    def kind(self) -> str:
        """``text``, ``template`` or the medium given."""
        if self.template is not None:
            return "template"
        return next((name for name in CAMPAIGN_MEDIA if getattr(self, name) is not None), "text")


class CampaignStartIn(_Strict):
    """``POST /api/campaigns/{id}/start``: now, or at ``start_at`` (the campaign is then ``scheduled``)."""

    start_at: DateTime | None = None

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class EndpointIn(_Strict):
    """``POST /api/webhook-endpoints``: where a company's events are delivered (Standard Webhooks)."""

    company_id: int = Field(gt=0, le=MAX_ID)
    url: str = Field(min_length=8, max_length=2000, description="https:// (http:// too outside prod)")
    event_types: list[str] = Field(default_factory=list, max_length=20, description="empty: every type")
    description: str = Field(default="", max_length=500)
    enabled: bool = True
    rate_per_second: int = Field(default=200, ge=1, le=10_000, description="deliveries started per second, at most")
    max_in_flight: int = Field(default=64, ge=1, le=1_000, description="deliveries in flight at once, at most")


class EndpointPatch(_Strict):
    """``PATCH /api/webhook-endpoints/{id}``: only the fields given change; ``enabled: true`` resumes."""

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    event_types: list[str] | None = Field(default=None, max_length=20)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None
    rate_per_second: int | None = Field(default=None, ge=1, le=10_000)
    max_in_flight: int | None = Field(default=None, ge=1, le=1_000)

    @model_validator(mode="after")
    def _something(self) -> EndpointPatch:
        return _changes(self)


class ReplayIn(_Strict):
    """``POST /api/webhook-endpoints/{id}/replay``: one event again, or everything since a time."""

    event_id: str | None = Field(default=None, max_length=40, description="evt_…")
    since: DateTime | None = Field(default=None, description="every event that occurred since then")
    only_failed: bool = Field(default=False, description="with since: only failed (and never sent) deliveries")

    @model_validator(mode="after")
    def _one(self) -> ReplayIn:
        if (self.event_id is None) == (self.since is None):
            raise ValueError("give exactly one of event_id or since")
        if self.since is not None and self.since.tzinfo is None:
            self.since = self.since.replace(tzinfo=dt.UTC)
        return self


class KeyIn(_Strict):
    """``POST /api/keys``: a new API key (its text is answered once, as ``key``)."""

    company_id: int | None = Field(default=None, gt=0, le=MAX_ID, description="none: a key for every company")
    scopes: list[str] = Field(min_length=1, max_length=20, description="see x-scopes of each operation")
    name: str = Field(default="", max_length=200)
    expires_at: DateTime | None = Field(default=None, description="none: it never expires")

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value

    @model_validator(mode="after")
    def _scopes(self) -> KeyIn:
        try:
            check_scopes(self.scopes, self.company_id)
        except InvalidKeyRequestError as exc:
            raise ValueError(str(exc)) from None
        return self


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    KeyIn,
    MessageIn,
    CompanyIn,
    ConnectionIn,
    ConnectionPatch,
    CampaignIn,
    CampaignStartIn,
    EndpointIn,
    EndpointPatch,
    ReplayIn,
    OptOutIn,
    TemplateSyncIn,
)
