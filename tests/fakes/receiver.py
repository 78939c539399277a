"""A tiny webhook receiver for tests: records every POST (path, headers, exact body bytes) and answers 200.

Serve ``WebhookReceiver().app`` with :func:`tests.fakes.server.running_app`; the server runs in another
thread, so received requests are handed over through a thread-safe queue (``get`` / ``aget``).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass(frozen=True)
class ReceivedWebhook:
    """One POST as it arrived: path, lower-cased headers and the raw body."""

    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """An ASGI app (``.app``) that queues every POST it receives; ``status_code`` is what it answers."""

    def __init__(self, *, status_code: int = 200) -> None:
        self.status_code = status_code
        self._received: queue.Queue[ReceivedWebhook] = queue.Queue()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._received.put(ReceivedWebhook(request.url.path, headers, body))
        return Response(status_code=self.status_code)

    def get(self, timeout: float = 5.0) -> ReceivedWebhook:
        """The next received POST, waiting up to ``timeout`` seconds (``queue.Empty`` after that)."""
        return self._received.get(timeout=timeout)

    async def aget(self, timeout: float = 5.0) -> ReceivedWebhook:
        """``get`` without blocking the caller's event loop."""
        return await anyio.to_thread.run_sync(self.get, timeout)
