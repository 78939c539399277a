"""WhatsApp provider clients behind one ``Provider`` protocol.

``MetaCloudClient`` talks to the Meta Cloud (Graph) API, ``BaileysBridgeClient`` to an Evolution API v2
bridge. Each translates its provider's failures into :mod:`libs.errors` in exactly one mapping function
(:func:`map_meta_error`, :func:`map_bridge_error`).
"""

from __future__ import annotations

from libs.providers.baileys import BaileysBridgeClient, map_bridge_error
from libs.providers.base import (
    OutboundContent,
    OutboundMessage,
    OutboundTemplate,
    OutboundText,
    Provider,
    SendResult,
)
from libs.providers.meta import MetaCloudClient, map_meta_error

__all__ = [
    "BaileysBridgeClient",
    "MetaCloudClient",
    "OutboundContent",
    "OutboundMessage",
    "OutboundTemplate",
    "OutboundText",
    "Provider",
    "SendResult",
    "map_bridge_error",
    "map_meta_error",
]
