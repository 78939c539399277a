"""WhatsApp wire formats: webhook signatures, Meta Cloud API and Evolution API (Baileys) webhook parsers. Pure
functions only: no I/O, no settings, no globals (the order of outbound statuses is applied by
``libs.messages.status_store``).

Parsers raise :class:`libs.errors.ParseError` (with a JSON ``path``) and nothing else for any JSON-like input.
"""

from __future__ import annotations

from libs.whatsapp.baileys import (
    jid_phone,
    map_baileys_status,
    normalize_event_name,
    parse_baileys_event,
    parse_baileys_events,
)
from libs.whatsapp.baileys_types import (
    BaileysConnectionUpdate,
    BaileysEvent,
    BaileysMessageUpdate,
    BaileysMessageUpsert,
    BaileysOther,
)
from libs.whatsapp.meta import meta_dedup_key, parse_meta_webhook
from libs.whatsapp.meta_types import (
    ContactInfo,
    InboundMessage,
    MetaBatch,
    MetaSystemError,
    StatusUpdate,
    TemplateStatusUpdate,
)
from libs.whatsapp.signature import sign_meta, verify_meta_signature, verify_shared_secret

__all__ = [
    "BaileysConnectionUpdate",
    "BaileysEvent",
    "BaileysMessageUpdate",
    "BaileysMessageUpsert",
    "BaileysOther",
    "ContactInfo",
    "InboundMessage",
    "MetaBatch",
    "MetaSystemError",
    "StatusUpdate",
    "TemplateStatusUpdate",
    "jid_phone",
    "map_baileys_status",
    "meta_dedup_key",
    "normalize_event_name",
    "parse_baileys_event",
    "parse_baileys_events",
    "parse_meta_webhook",
    "sign_meta",
    "verify_meta_signature",
    "verify_shared_secret",
]
