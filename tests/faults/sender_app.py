"""The message-sender with a 2 s provider read timeout and a 10 s reconcile window (test-only).

``python -m dramatiq tests.faults.sender_app`` keeps the provider-storm test short: a forced hang of a few
seconds becomes a real client timeout (an ambiguous send), and an unconfirmed send is looked at again after
10 s instead of 30 s. The production values live in :mod:`libs.sending.runtime` and :mod:`libs.sending.send`.
"""

from __future__ import annotations

import httpx

from libs.sending import runtime
from libs.sending.send import SenderContext

runtime.PROVIDER_TIMEOUT = httpx.Timeout(connect=2.0, read=2.0, write=2.0, pool=5.0)

from services.message_sender import broker, send_message, send_message_low, send_message_urgent, sender  # noqa: E402

RECONCILE_SECONDS = 10
_context = sender.context


async def _short_reconcile() -> SenderContext:
    context = await _context()
    context.reconcile_seconds = RECONCILE_SECONDS
    return context


sender.context = _short_reconcile  # type: ignore[method-assign]

__all__ = ["broker", "send_message", "send_message_low", "send_message_urgent"]
