"""One pydantic model per outbound message kind, in Meta's Cloud API wire shape, with Meta's published limits.

A request body's kind object is exactly what Meta's ``POST /{phone-number-id}/messages`` carries under the
kind's name (``whatsapp-more.md`` section 1), so a violated limit answers 422 naming the field and the limit
(``image.caption: String should have at most 1024 characters``) and the stored payload
(:mod:`libs.messages.kinds`) goes to the provider unchanged. Limits: text 4,096; caption 1,024; reply buttons
1 to 3 with unique titles of at most 20 characters; list rows at most 10 in all; header text 60; footer 60.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_CAPTION = 1024
MAX_BUTTON_TITLE = 20
MAX_HEADER_TEXT = 60
MAX_FOOTER = 60
MAX_LIST_ROWS = 10


class _Kind(BaseModel):
    """A kind's object: no unknown fields and no type coercion (``"1"`` is not a number, ``"yes"`` not a
    boolean), as the published schema says (:mod:`libs.api.schema_rules`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


def check_link(value: str | None) -> str | None:
    """A media or button link must be an absolute http(s) URL (Meta fetches it)."""
    if value is not None and not (value.startswith(("https://", "http://")) and len(value.split("://", 1)[1]) > 0):
        raise ValueError("the link must be an http:// or https:// URL")
    return value


class MediaRef(_Kind):
    """A media file by Meta media id (or zapq media id: resolved when sent) or by public http(s) link."""

    id: str | None = Field(default=None, min_length=1, max_length=200, description="uploaded media id")
    link: str | None = Field(default=None, min_length=8, max_length=2000, description="http(s) URL")

    @field_validator("link")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        return check_link(value)

    @model_validator(mode="after")
    def _one(self) -> MediaRef:
        if (self.id is None) == (self.link is None):
            raise ValueError("give exactly one of id or link")
        return self


class ImageIn(MediaRef):
    """``image``: JPEG or PNG, at most 5 MB."""

    caption: str | None = Field(default=None, min_length=1, max_length=MAX_CAPTION)


class VideoIn(MediaRef):
    """``video``: MP4 or 3GPP (H.264 + AAC), at most 16 MB."""

    caption: str | None = Field(default=None, min_length=1, max_length=MAX_CAPTION)


class AudioIn(MediaRef):
    """``audio``: AAC, AMR, MP3, MP4 or OGG/Opus, at most 16 MB; ``voice: true`` for a voice note (OGG/Opus)."""

    voice: bool | None = None


class DocumentIn(MediaRef):
    """``document``: PDF, text or office file, at most 100 MB; ``filename`` is what the recipient sees."""

    caption: str | None = Field(default=None, min_length=1, max_length=MAX_CAPTION)
    filename: str | None = Field(default=None, min_length=1, max_length=240)


class StickerIn(MediaRef):
    """``sticker``: WebP, at most 100 KB (animated 500 KB)."""


class LocationIn(_Kind):
    """``location``: a map pin."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, min_length=1, max_length=1000)
    address: str | None = Field(default=None, min_length=1, max_length=1000)


class ContactName(_Kind):
    formatted_name: str = Field(min_length=1, max_length=500)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    middle_name: str | None = Field(default=None, max_length=200)
    prefix: str | None = Field(default=None, max_length=50)
    suffix: str | None = Field(default=None, max_length=50)


class ContactPhone(_Kind):
    phone: str = Field(min_length=1, max_length=50)
    type: str | None = Field(default=None, max_length=20, description="CELL, MAIN, IPHONE, HOME or WORK")
    wa_id: str | None = Field(default=None, max_length=20)


class ContactEmail(_Kind):
    email: str = Field(min_length=3, max_length=320)
    type: str | None = Field(default=None, max_length=20)


class ContactUrl(_Kind):
    url: str = Field(min_length=1, max_length=2000)
    type: str | None = Field(default=None, max_length=20)


class ContactAddress(_Kind):
    street: str | None = Field(default=None, max_length=500)
    city: str | None = Field(default=None, max_length=200)
    state: str | None = Field(default=None, max_length=200)
    zip: str | None = Field(default=None, max_length=50)
    country: str | None = Field(default=None, max_length=200)
    country_code: str | None = Field(default=None, max_length=10)
    type: str | None = Field(default=None, max_length=20)


class ContactOrg(_Kind):
    company: str | None = Field(default=None, max_length=500)
    department: str | None = Field(default=None, max_length=500)
    title: str | None = Field(default=None, max_length=500)


class ContactIn(_Kind):
    """One contact card of a ``contacts`` message."""

    name: ContactName
    phones: list[ContactPhone] | None = Field(default=None, max_length=20)
    emails: list[ContactEmail] | None = Field(default=None, max_length=20)
    urls: list[ContactUrl] | None = Field(default=None, max_length=20)
    addresses: list[ContactAddress] | None = Field(default=None, max_length=20)
    org: ContactOrg | None = None
    birthday: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD")


class ReactionIn(_Kind):
    """``reaction``: an emoji on a message (its wamid / key id); ``""`` removes the reaction."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)

    message_id: str = Field(min_length=1, max_length=200)
    emoji: str = Field(max_length=16, description="one emoji; empty removes the reaction")


# -- interactive ------------------------------------------------------------------------------------------


class Text(_Kind):
    text: str = Field(min_length=1, max_length=MAX_CAPTION)


class LongText(_Kind):
    text: str = Field(min_length=1, max_length=4096)


class Footer(_Kind):
    text: str = Field(min_length=1, max_length=MAX_FOOTER)


class Header(_Kind):
    """An interactive message's header: ``text`` (at most 60) or one medium (``image``, ``video``, ``document``)."""

    type: Literal["text", "image", "video", "document"]
    text: str | None = Field(default=None, min_length=1, max_length=MAX_HEADER_TEXT)
    image: MediaRef | None = None
    video: MediaRef | None = None
    document: MediaRef | None = None

    @model_validator(mode="after")
    def _matching(self) -> Header:
        given = [name for name in ("text", "image", "video", "document") if getattr(self, name) is not None]
        if given != [self.type]:
            raise ValueError(f"a header of type {self.type} carries exactly the field {self.type}")
        return self


class ReplyButtonReply(_Kind):
    id: str = Field(min_length=1, max_length=256)
    title: str = Field(min_length=1, max_length=MAX_BUTTON_TITLE)


class ReplyButton(_Kind):
    type: Literal["reply"] = "reply"
    reply: ReplyButtonReply


class ButtonAction(_Kind):
    buttons: list[ReplyButton] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _unique(self) -> ButtonAction:
        for what in ("id", "title"):
            values = [getattr(button.reply, what) for button in self.buttons]
            if len(set(values)) != len(values):
                raise ValueError(f"each button's reply {what} must be unique")
        return self


class ButtonInteractive(_Kind):
    """Reply buttons: 1 to 3, titles of at most 20 characters, unique."""

    type: Literal["button"]
    header: Header | None = None
    body: Text
    footer: Footer | None = None
    action: ButtonAction


class ListRow(_Kind):
    id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=24)
    description: str | None = Field(default=None, min_length=1, max_length=72)


class ListSection(_Kind):
    title: str | None = Field(default=None, min_length=1, max_length=24)
    rows: list[ListRow] = Field(min_length=1, max_length=MAX_LIST_ROWS)


class ListAction(_Kind):
    button: str = Field(min_length=1, max_length=MAX_BUTTON_TITLE)
    sections: list[ListSection] = Field(min_length=1, max_length=10)

    @model_validator(mode="after")
    def _rows(self) -> ListAction:
        rows = [row.id for section in self.sections for row in section.rows]
        if len(rows) > MAX_LIST_ROWS:
            raise ValueError(f"a list has at most {MAX_LIST_ROWS} rows in all sections together, got {len(rows)}")
        if len(set(rows)) != len(rows):
            raise ValueError("each row id must be unique")
        if len(self.sections) > 1 and any(section.title is None for section in self.sections):
            raise ValueError("each section needs a title when there are several")
        return self


class TextHeader(_Kind):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=MAX_HEADER_TEXT)


class ListInteractive(_Kind):
    """A list: a button (at most 20) opening sections of rows (at most 10 rows in all)."""

    type: Literal["list"]
    header: TextHeader | None = None
    body: LongText
    footer: Footer | None = None
    action: ListAction


class CtaParameters(_Kind):
    display_text: str = Field(min_length=1, max_length=MAX_BUTTON_TITLE)
    url: str = Field(min_length=8, max_length=2000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_link(value) or value


class CtaAction(_Kind):
    name: Literal["cta_url"] = "cta_url"
    parameters: CtaParameters


class CtaUrlInteractive(_Kind):
    """A call-to-action URL button."""

    type: Literal["cta_url"]
    header: Header | None = None
    body: Text
    footer: Footer | None = None
    action: CtaAction


InteractiveIn = Annotated[ButtonInteractive | ListInteractive | CtaUrlInteractive, Field(discriminator="type")]


# -- templates ------------------------------------------------------------------------------------------


class TextParam(_Kind):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=MAX_CAPTION)


class Currency(_Kind):
    fallback_value: str = Field(min_length=1, max_length=100)
    code: str = Field(min_length=3, max_length=3)
    amount_1000: int


class CurrencyParam(_Kind):
    type: Literal["currency"]
    currency: Currency


class DateTime(_Kind):
    fallback_value: str = Field(min_length=1, max_length=100)


class DateTimeParam(_Kind):
    type: Literal["date_time"]
    date_time: DateTime


class ImageParam(_Kind):
    type: Literal["image"]
    image: MediaRef


class VideoParam(_Kind):
    type: Literal["video"]
    video: MediaRef


class TemplateDocument(MediaRef):
    filename: str | None = Field(default=None, min_length=1, max_length=240)


class DocumentParam(_Kind):
    type: Literal["document"]
    document: TemplateDocument


class PayloadParam(_Kind):
    type: Literal["payload"]
    payload: str = Field(min_length=1, max_length=1000)


class HeaderTextParam(_Kind):
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=MAX_HEADER_TEXT)


class HeaderComponent(_Kind):
    """The template's header: one text (at most 60) or media parameter (no caption)."""

    type: Literal["header"]
    parameters: list[
        Annotated[HeaderTextParam | ImageParam | VideoParam | DocumentParam, Field(discriminator="type")]
    ] = Field(min_length=1, max_length=1)


class BodyComponent(_Kind):
    """The template body's parameters, in order."""

    type: Literal["body"]
    parameters: list[Annotated[TextParam | CurrencyParam | DateTimeParam, Field(discriminator="type")]] = Field(
        default_factory=list, max_length=100
    )


class ButtonComponent(_Kind):
    """A button's parameter: a ``quick_reply`` payload, or a ``url`` suffix (``index`` is a string, 0 to 9)."""

    type: Literal["button"]
    sub_type: Literal["quick_reply", "url"]
    index: str = Field(pattern=r"^[0-9]$")
    parameters: list[Annotated[PayloadParam | TextParam, Field(discriminator="type")]] = Field(
        min_length=1, max_length=1
    )

    @field_validator("index", mode="before")
    @classmethod
    def _index(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _matching(self) -> ButtonComponent:
        wanted = "payload" if self.sub_type == "quick_reply" else "text"
        if self.parameters[0].type != wanted:
            raise ValueError(f"a {self.sub_type} button takes a {wanted} parameter")
        return self


TemplateComponent = Annotated[HeaderComponent | BodyComponent | ButtonComponent, Field(discriminator="type")]


def dump(model: BaseModel | list[Any]) -> Any:
    """A kind's content as stored and sent: Meta's shape, unset optional fields left out."""
    if isinstance(model, list):
        return [dump(item) for item in model]
    return model.model_dump(exclude_none=True)
