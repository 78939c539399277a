"""Provider-neutral message types and the ``Provider`` protocol every WhatsApp client implements.

A provider client turns an outbound message into one HTTP call and either returns a :class:`SendResult` or
raises an exception from :mod:`libs.errors` (``ProviderTransientError``, ``ProviderPermanentError`` and their
subclasses, or ``ProviderRateLimited``). Callers decide what to do by ``isinstance``, never by error text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable


@dataclass(frozen=True, slots=True)
class OutboundText:
    """A free-form text message.

    ``to`` is the recipient's phone number (E.164, with or without ``+``), ``reply_to`` the provider id of the
    message being answered and ``client_ref`` our own message id (echoed back by providers that support it).
    """

    to: str
    body: str
    reply_to: str | None = None
    client_ref: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundTemplate:
    """A pre-approved template message (the only kind Meta allows outside the 24 h service window).

    ``components`` are passed through unchanged in the provider's wire format, e.g.
    ``[{"type": "body", "parameters": [{"type": "text", "text": "12345"}]}]``.
    """

    to: str
    name: str
    language: str
    components: list[dict[str, Any]] = field(default_factory=list)
    client_ref: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class OutboundContent:
    """Any other kind (:mod:`libs.messages.kinds`): image, video, audio, document, sticker, interactive,
    location, contacts, reaction.

    ``content`` is the kind's object in Meta's Cloud API shape (validated by the API against Meta's limits),
    e.g. ``{"link": "https://…/a.jpg", "caption": "…"}`` for an image, a list of contact cards for
    ``contacts``; each provider client maps it to its own wire format.
    """

    to: str
    kind: str
    content: Any
    reply_to: str | None = None
    client_ref: str | None = None
    #: A reaction's target is one of our own messages (a bridge keys it with ``fromMe``; Meta needs no hint).
    target_from_me: bool = False


OutboundMessage: TypeAlias = OutboundText | OutboundTemplate | OutboundContent
"""Any message a :class:`Provider` can be asked to send."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a provider returned for an accepted send.

    ``external_id`` is the provider's message id (Meta wamid, Baileys ``key.id``); ``wa_id`` the recipient's
    WhatsApp id when the provider reports it; ``provider_status`` the provider's own status word, if any
    (e.g. Meta ``accepted``/``held_for_quality_assessment``, Baileys ``PENDING``).
    """

    external_id: str
    wa_id: str | None = None
    provider_status: str | None = None


@runtime_checkable
class Provider(Protocol):
    """A WhatsApp sending channel: one ``send`` call per message, errors raised from ``libs.errors``."""

    name: str

    async def send(self, message: OutboundMessage, *, pair_hits: int = 0) -> SendResult:
        """Send ``message`` once and return the provider's ids, or raise a ``ProviderError`` subclass.

        ``pair_hits``: the provider's per-recipient refusals in a row so far (``PairRateLimited`` backs off by it).
        """
        ...
