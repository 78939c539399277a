"""A fake Evolution API v2 (Baileys bridge) for tests and benchmarks.

Run it in-process with :func:`tests.fakes.server.running_app` (``create_app(EvolutionFakeConfig(...))``) or
on its own::

    python -m tests.fakes.evolution --port 18081 --api-key K --instance main \\
        --webhook-url http://127.0.0.1:8000/webhooks/baileys --webhook-header X-Bridge-Secret:S

Endpoints (doc section C): ``POST /message/sendText/{instance}`` and ``GET /instance/connectionState/
{instance}``, both behind the ``apikey`` header (401) and the instance name (404). A send to a number in
``not_on_whatsapp`` → 400 with ``{jid, exists: false, number}``; to an instance whose state is not ``open``
→ 400 ``["Error: Connection Closed"]``; otherwise 201 with the Baileys message, recorded, and when
``webhook_url`` is set, ``messages.update`` events (``SERVER_ACK``, ``DELIVERY_ACK``, ``READ``) are posted
there with ``webhook_headers``. Forced errors (``POST /_fake/config {"forced_errors": [...]}``): an HTTP
status (``500``), ``{"http_status": 502, "body": {...}}``, ``"close"`` or ``"timeout"``. Control endpoints as
in :mod:`tests.fakes.meta`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import evolution_kinds
from tests.fakes.common import (
    HANG_MS_DEFAULT,
    DropConnection,
    WebhookPoster,
    base_arg_parser,
    fake_app,
    serve_forever,
    sleep_unless_disconnected,
)
from tests.fakes.evolution_media import BridgeMediaFake, bridge_media_routes

DEFAULT_API_KEY = "fake-evolution-key"
DEFAULT_INSTANCE = "main"
STATE_VALUES = ("open", "connecting", "close")
HTTP_ERROR_NAMES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}


def envelope(status: int, message: Any) -> dict[str, Any]:
    """Evolution's error body: ``{"status", "error", "response": {"message"}}``."""
    return {
        "status": status,
        "error": HTTP_ERROR_NAMES.get(status, "Error"),
        "response": {"message": message},
    }


def jid(number: str) -> str:
    """The WhatsApp JID of a phone number."""
    return f"{number.lstrip('+')}@s.whatsapp.net"


@dataclass
class EvolutionFakeConfig:
    """Settings of the fake bridge; every field can be changed at run time via ``POST /_fake/config``."""

    api_keys: list[str] = field(default_factory=lambda: [DEFAULT_API_KEY])
    instances: dict[str, str] = field(default_factory=lambda: {DEFAULT_INSTANCE: "open"})
    not_on_whatsapp: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    hang_ms: float = HANG_MS_DEFAULT
    webhook_url: str | None = None
    webhook_headers: dict[str, str] = field(default_factory=dict)
    webhook_statuses: list[str] = field(default_factory=lambda: ["SERVER_ACK", "DELIVERY_ACK", "READ"])
    webhook_gap_ms: float = 0.0
    owner_number: str = "5511888888888"


@dataclass
class EvolutionSend:
    """One accepted ``sendText``, as listed by ``GET /_fake/sends``."""

    instance: str
    number: str
    text: str
    key_id: str
    quoted_id: str | None
    received_at: float


class EvolutionFake:
    """State of one fake bridge: config, forced-error queue, sends and webhook log."""

    def __init__(self, config: EvolutionFakeConfig) -> None:
        self._initial = copy.deepcopy(config)
        self.config = config
        self.forced: deque[Any] = deque()
        self.sends: list[EvolutionSend] = []
        self.webhooks = WebhookPoster()
        self.instance_ids: dict[str, str] = {}
        #: Sends of the other kinds (:mod:`tests.fakes.evolution_kinds`).
        self.kind_sends: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Back to the start-up config with no sends and no forced errors."""
        self.config = copy.deepcopy(self._initial)
        self.forced.clear()
        self.sends.clear()
        self.kind_sends.clear()
        self.webhooks.deliveries.clear()

    async def gate(self, request: Request) -> tuple[str, Response | None]:
        """Apply latency, auth, instance lookup and forced errors; return the instance and an early answer."""
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)
        instance = request.path_params["instance"]
        if request.headers.get("apikey") not in self.config.api_keys:
            return instance, JSONResponse(envelope(401, "Unauthorized"), status_code=401)
        if instance not in self.config.instances:
            body = envelope(404, [f'The "{instance}" instance does not exist'])
            return instance, JSONResponse(body, status_code=404)
        if not self.forced:
            return instance, None
        forced = self.forced.popleft()
        if forced == "close":
            return instance, DropConnection()
        if forced == "timeout":
            await request.body()
            if await sleep_unless_disconnected(request, self.config.hang_ms / 1000):
                return instance, Response(status_code=499)
            return instance, None
        if isinstance(forced, int):
            return instance, JSONResponse(envelope(forced, ["Error: forced by the fake"]), status_code=forced)
        status = int(forced.get("http_status", 500)) if isinstance(forced, dict) else 500
        body = forced.get("body", envelope(status, ["forced"])) if isinstance(forced, dict) else {}
        return instance, JSONResponse(body, status_code=status)

    async def send_text(self, request: Request) -> Response:
        """``POST /message/sendText/{instance}``."""
        instance, early = await self.gate(request)
        if early is not None:
            return early
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return JSONResponse(envelope(400, ["Unexpected token in JSON"]), status_code=400)
        number = payload.get("number") if isinstance(payload, dict) else None
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(number, str) or not number.strip():
            return JSONResponse(envelope(400, ['instance requires property "number"']), status_code=400)
        if not isinstance(text, str) or not text:
            return JSONResponse(envelope(400, ['instance requires property "text"']), status_code=400)
        number = number.lstrip("+")
        if number in {n.lstrip("+") for n in self.config.not_on_whatsapp}:
            missing = [{"jid": jid(number), "exists": False, "number": number}]
            return JSONResponse(envelope(400, missing), status_code=400)
        if self.config.instances[instance] != "open":
            return JSONResponse(envelope(400, ["Error: Connection Closed"]), status_code=400)

        quoted = payload.get("quoted")
        quoted_key = quoted.get("key") if isinstance(quoted, dict) else None
        quoted_id = quoted_key.get("id") if isinstance(quoted_key, dict) else None
        send = EvolutionSend(instance, number, text, "3EB0" + secrets.token_hex(9).upper(), quoted_id, time.time())
        self.sends.append(send)
        instance_id = self.instance_ids.setdefault(instance, str(uuid.uuid4()))
        if self.config.webhook_url:
            self._schedule_webhooks(send, instance_id, self.config.webhook_url, str(request.base_url))
        body = {
            "key": {"remoteJid": jid(number), "fromMe": True, "id": send.key_id},
            "pushName": "Você",
            "status": "PENDING",
            "message": {"conversation": text},
            "contextInfo": {"stanzaId": quoted_id} if quoted_id else None,
            "messageType": "conversation",
            "messageTimestamp": int(send.received_at),
            "instanceId": instance_id,
            "source": "unknown",
        }
        return JSONResponse(body, status_code=201)

    async def connection_state(self, request: Request) -> Response:
        """``GET /instance/connectionState/{instance}``."""
        instance, early = await self.gate(request)
        if early is not None:
            return early
        return JSONResponse({"instance": {"instanceName": instance, "state": self.config.instances[instance]}})

    def _schedule_webhooks(self, send: EvolutionSend, instance_id: str, url: str, server_url: str) -> None:
        posts = []
        for status in self.config.webhook_statuses:
            event = {
                "event": "messages.update",
                "instance": send.instance,
                "data": {
                    "keyId": send.key_id,
                    "remoteJid": jid(send.number),
                    "fromMe": True,
                    "participant": None,
                    "status": status,
                    "instanceId": instance_id,
                    "messageId": uuid.uuid4().hex[:25],
                },
                "destination": url,
                "date_time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "sender": jid(self.config.owner_number),
                "server_url": server_url.rstrip("/"),
                "apikey": None,
            }
            body = json.dumps(event).encode()
            headers = {"Content-Type": "application/json", **self.config.webhook_headers}
            posts.append((url, status, body, headers))
        self.webhooks.schedule(posts, gap_s=self.config.webhook_gap_ms / 1000)


def create_app(config: EvolutionFakeConfig | None = None) -> Starlette:
    """The fake bridge as an ASGI app; its state is ``app.state.fake`` (an :class:`EvolutionFake`)."""
    fake = EvolutionFake(config or EvolutionFakeConfig())

    async def send_text(request: Request) -> Response:
        return await fake.send_text(request)

    async def connection_state(request: Request) -> Response:
        return await fake.connection_state(request)

    def validate(changes: dict[str, Any]) -> str | None:
        bad_states = [s for s in (changes.get("instances") or {}).values() if s not in STATE_VALUES]
        return f"unknown states: {bad_states}" if bad_states else None

    media = BridgeMediaFake()  # the media export: tests/fakes/evolution_media.py
    app = fake_app(
        fake,
        [
            Route("/message/sendText/{instance}", send_text, methods=["POST"]),
            Route("/instance/connectionState/{instance}", connection_state, methods=["GET"]),
            *bridge_media_routes(media, fake),
            *evolution_kinds.routes(fake),
        ],
        validate=validate,
    )
    app.state.media = media
    return app


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m tests.fakes.evolution --port 18081 …``."""
    parser = base_arg_parser("Fake Evolution API v2 (Baileys bridge)", default_port=18081)
    parser.add_argument("--api-key", action="append", dest="api_keys", help="valid apikey (repeatable)")
    parser.add_argument("--instance", action="append", dest="instances", help="instance name (repeatable)")
    parser.add_argument("--not-on-whatsapp", action="append", default=[], help="number to refuse")
    parser.add_argument("--webhook-header", action="append", default=[], help="NAME:VALUE sent on webhooks")
    args = parser.parse_args(argv)
    headers = dict(item.split(":", 1) for item in args.webhook_header)
    config = EvolutionFakeConfig(
        api_keys=args.api_keys or [DEFAULT_API_KEY],
        instances={name: "open" for name in (args.instances or [DEFAULT_INSTANCE])},
        not_on_whatsapp=args.not_on_whatsapp,
        latency_ms=args.latency_ms,
        webhook_url=args.webhook_url,
        webhook_headers={name.strip(): value.strip() for name, value in headers.items()},
    )
    serve_forever(create_app(config), args)


if __name__ == "__main__":
    main()
