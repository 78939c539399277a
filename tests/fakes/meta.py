"""A fake Meta WhatsApp Cloud API (Graph ``/messages``) for tests and benchmarks.

Run it in-process with :func:`tests.fakes.server.running_app` (``create_app(MetaFakeConfig(...))``) or on its
own::

    python -m tests.fakes.meta --port 18080 --webhook-url http://127.0.0.1:8000/webhooks/meta --app-secret S

Behaviour of ``POST /{version}/{phone_number_id}/messages``, in order:

1. Bearer token not in ``valid_tokens`` → 401, code 190.
2. Next entry of the forced-error queue, if any: an error code (``131026`` or ``{"code": 131026,
   "http_status": 400}``), ``{"http_status": 502, "raw": "<html>…"}`` (a body without a code), ``"close"``
   (the socket is closed mid-response) or ``"timeout"`` (the request hangs ``hang_ms``, then proceeds).
3. With probability ``error_rate`` → 500 with ``error_code`` (default 131000).
4. Invalid payload → 400, code 100.
5. More than ``rate_per_second`` accepted sends for the phone number in the last ``rate_window_s`` (1 s)
   → 130429.
6. More than ``pair_limit`` sends to one recipient within ``pair_window_s`` → 131056 (off by default).
7. With ``service_window_s`` set (Meta: 86,400; off by default): a free-form (non-template) message to a user
   who has not written to the number within that window → 400, code 131047 ("Re-engagement message"). The
   fake learns that a user wrote from ``POST /_fake/inbound`` ``{"phone_number_id", "from", "at"?}`` (epoch
   seconds, default now).
8. Accepted: recorded, answered 200 with a new wamid, and when ``webhook_url`` is set the statuses in
   ``webhook_statuses`` are posted there, signed with ``app_secret`` (``X-Hub-Signature-256``).

Every answer waits ``latency_ms`` first. Control: ``GET/POST /_fake/config`` (POST a partial config; a
``forced_errors`` list is appended to the queue), ``POST /_fake/reset``, ``GET /_fake/sends``,
``GET /_fake/webhooks``, ``GET /_fake/health``, ``POST /_fake/inbound``, ``GET /_fake/calls`` (every
``/messages`` request seen, accepted or not). Templates (the WABA's catalogue, template sends checked against
it, status webhooks): :mod:`tests.fakes.meta_templates`. Phone-number fields (``GET /{version}/{phone_number_id}``)
and quality / capability webhooks (``POST /_fake/quality``, ``/_fake/capability``): :mod:`tests.fakes.meta_quality`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes import meta_quality, meta_templates
from tests.fakes import meta_wire as wire
from tests.fakes.common import (
    HANG_MS_DEFAULT,
    DropConnection,
    SlidingWindow,
    WebhookPoster,
    base_arg_parser,
    fake_app,
    serve_forever,
    sleep_unless_disconnected,
)
from tests.fakes.meta_media import MetaMediaFake, media_routes

DEFAULT_TOKEN = "fake-meta-token"
#: The Graph API path of one object, as the media and quality fakes declare it (a media id, a phone number id),
#: and as this app serves it (one route for both: :func:`create_app`).
MEDIA_PATH = "/{version}/{media_id}"
NUMBER_PATH = "/{version}/{phone_number_id}"
OBJECT_ROUTE = "/{version}/{object_id}"
DEFAULT_RATE_PER_SECOND = 80


@dataclass
class MetaFakeConfig:
    """Settings of the fake Meta API; every field can be changed at run time via ``POST /_fake/config``."""

    valid_tokens: list[str] = field(default_factory=lambda: [DEFAULT_TOKEN])
    rate_per_second: int | None = DEFAULT_RATE_PER_SECOND
    rate_window_s: float = 1.0
    pair_limit: int | None = None
    pair_window_s: float = 6.0
    latency_ms: float = 0.0
    error_rate: float = 0.0
    error_code: int = 131000
    hang_ms: float = HANG_MS_DEFAULT
    webhook_url: str | None = None
    app_secret: str = "fake-app-secret"
    webhook_statuses: list[str] = field(default_factory=lambda: ["sent", "delivered", "read"])
    webhook_gap_ms: float = 0.0
    webhook_failed_code: int = 131026
    waba_id: str = "102290129340398"
    display_phone_number: str = "15550783881"
    record_payloads: bool = True
    #: Meta's customer-service window in seconds (86,400); ``None``: free-form messages are always accepted.
    service_window_s: float | None = None
    #: Every number's fields until ``POST /_fake/quality`` changes one (:mod:`tests.fakes.meta_quality`).
    quality_rating: str = "GREEN"
    messaging_limit_tier: str = "TIER_2K"
    throughput_level: str = "STANDARD"


@dataclass
class MetaSend:
    """One accepted send, as listed by ``GET /_fake/sends``."""

    phone_number_id: str
    to: str
    type: str
    wamid: str
    body: str | None
    template: dict[str, Any] | None
    client_ref: str | None
    reply_to: str | None
    payload: dict[str, Any] | None
    received_at: float


class MetaFake:
    """State of one fake Meta API: config, forced-error queue, rate windows, sends and webhook log."""

    def __init__(self, config: MetaFakeConfig) -> None:
        self._initial = copy.deepcopy(config)
        self.config = config
        self.forced: deque[Any] = deque()
        self.windows = SlidingWindow()
        self.sends: list[MetaSend] = []
        self.webhooks = WebhookPoster()
        self.random = random.Random()
        #: When each user last wrote to each number (``"<phone_number_id>:<wa_id>"`` → epoch seconds).
        self.inbound: dict[str, float] = {}
        #: Every ``/messages`` request seen.
        self.calls = 0
        #: Each WABA's templates (``tests.fakes.meta_templates``): listed, and template sends checked against them.
        self.templates = meta_templates.TemplateCatalogues()
        #: Fields changed per phone number id (:mod:`tests.fakes.meta_quality`).
        self.numbers: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        """Back to the start-up config with no sends, no forced errors and empty rate windows."""
        self.config = copy.deepcopy(self._initial)
        self.forced.clear()
        self.windows.clear()
        self.sends.clear()
        self.webhooks.deliveries.clear()
        self.inbound.clear()
        self.calls = 0
        self.templates.clear()
        self.numbers.clear()

    async def handle_send(self, request: Request) -> Response:
        """Answer one ``/messages`` call (see the module docstring for the order of checks)."""
        cfg = self.config
        self.calls += 1
        phone_number_id = request.path_params["phone_number_id"]
        raw = await request.body()
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        if token not in cfg.valid_tokens:
            return await self._error(190)

        if self.forced:
            forced = self.forced.popleft()
            if forced == "close":
                return DropConnection()
            if forced == "timeout":
                if await sleep_unless_disconnected(request, cfg.hang_ms / 1000):
                    return Response(status_code=499)
            else:
                return await self._forced_error(forced)
        if cfg.error_rate and self.random.random() < cfg.error_rate:
            return await self._error(cfg.error_code, http_status=500)

        try:
            payload = json.loads(raw)
        except ValueError:
            return await self._error(100, details="the body is not valid JSON")
        problem = wire.validate_payload(payload)
        if problem:
            return await self._error(100, details=problem)

        if payload.get("type") == "template" and (code := self.templates.refusal(cfg.waba_id, payload["template"])):
            return await self._error(code)
        to = payload["to"]
        if cfg.rate_per_second and not self.windows.hit(
            f"number:{phone_number_id}", limit=cfg.rate_per_second, window_s=cfg.rate_window_s
        ):
            return await self._error(130429)
        if cfg.pair_limit and not self.windows.hit(
            f"pair:{phone_number_id}:{to.lstrip('+')}", limit=cfg.pair_limit, window_s=cfg.pair_window_s
        ):
            return await self._error(131056)
        if cfg.service_window_s is not None and payload.get("type", "text") != "template":
            wrote = self.inbound.get(f"{phone_number_id}:{to.lstrip('+')}")
            if wrote is None or time.time() - wrote > cfg.service_window_s:
                return await self._error(131047)

        send = self._record(phone_number_id, payload)
        if cfg.webhook_url:
            self._schedule_webhooks(send, cfg.webhook_url)
        await self._latency()
        return JSONResponse(wire.success_body(to, send.wamid, template=send.type == "template"))

    def _record(self, phone_number_id: str, payload: dict[str, Any]) -> MetaSend:
        kind = payload.get("type", "text")
        context = payload.get("context") or {}
        send = MetaSend(
            phone_number_id=phone_number_id,
            to=payload["to"],
            type=kind,
            wamid=wire.new_wamid(),
            body=payload["text"]["body"] if kind == "text" else None,
            template=payload["template"] if kind == "template" else None,
            client_ref=payload.get("biz_opaque_callback_data"),
            reply_to=context.get("message_id"),
            payload=payload if self.config.record_payloads else None,
            received_at=time.time(),
        )
        self.sends.append(send)
        return send

    def _schedule_webhooks(self, send: MetaSend, url: str) -> None:
        cfg = self.config
        posts = []
        for status in cfg.webhook_statuses:
            body = wire.serialise(
                wire.status_webhook(
                    waba_id=cfg.waba_id,
                    display_phone_number=cfg.display_phone_number,
                    phone_number_id=send.phone_number_id,
                    wamid=send.wamid,
                    recipient=send.to,
                    status=status,
                    timestamp=int(time.time()),
                    client_ref=send.client_ref,
                    failed_code=cfg.webhook_failed_code,
                )
            )
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": wire.signature_header(body, cfg.app_secret),
            }
            posts.append((url, status, body, headers))
        self.webhooks.schedule(posts, gap_s=cfg.webhook_gap_ms / 1000)

    async def _forced_error(self, forced: Any) -> Response:
        if isinstance(forced, int):
            return await self._error(forced)
        if isinstance(forced, dict) and "raw" in forced:
            await self._latency()
            return PlainTextResponse(str(forced["raw"]), status_code=int(forced.get("http_status", 500)))
        if isinstance(forced, dict) and isinstance(forced.get("code"), int):
            return await self._error(
                forced["code"], http_status=forced.get("http_status"), details=forced.get("details")
            )
        return PlainTextResponse(f"bad forced error {forced!r}", status_code=500)

    async def _error(self, code: int, *, http_status: int | None = None, details: str | None = None) -> Response:
        await self._latency()
        status = http_status or wire.default_http_status(code)
        return JSONResponse(wire.error_envelope(code, details=details), status_code=status)

    async def _latency(self) -> None:
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)


def create_app(config: MetaFakeConfig | None = None) -> Starlette:
    """The fake Meta API as an ASGI app; its state is ``app.state.fake`` (a :class:`MetaFake`)."""
    fake = MetaFake(config or MetaFakeConfig())

    async def messages(request: Request) -> Response:
        return await fake.handle_send(request)

    async def inbound(request: Request) -> Response:
        body = await request.json()
        key = f"{body['phone_number_id']}:{str(body['from']).lstrip('+')}"
        fake.inbound[key] = float(body.get("at") or time.time())
        return JSONResponse({"ok": True})

    async def calls(request: Request) -> Response:
        return JSONResponse({"calls": fake.calls})

    routes = [
        Route("/{version}/{phone_number_id}/messages", messages, methods=["POST"]),
        Route("/_fake/inbound", inbound, methods=["POST"]),
        Route("/_fake/calls", calls, methods=["GET"]),
        *meta_templates.routes(fake),
    ]
    app = fake_app(fake, routes)
    media = MetaMediaFake()  # the media API (tests/fakes/meta_media.py)
    extra = [*media_routes(media, fake), *meta_quality.routes(fake)]
    lookup = next(r.endpoint for r in extra if r.path == MEDIA_PATH)
    fields = next(r.endpoint for r in extra if r.path == NUMBER_PATH)
    rest = [r for r in extra if r.path not in (MEDIA_PATH, NUMBER_PATH)]

    async def graph_get(request: Request) -> Response:
        """``GET /{version}/{id}``: a phone number's fields when ``fields=`` is asked for (zapq always asks),
        else a media id's lookup — one path in the Graph API, two kinds of object."""
        object_id = request.path_params["object_id"]
        if "fields" in request.query_params:
            request.path_params["phone_number_id"] = object_id
            return await fields(request)
        request.path_params["media_id"] = object_id
        return await lookup(request)

    # after /_fake/*: GET /{version}/{id} would match those paths too
    app.router.routes.extend([*rest, Route(OBJECT_ROUTE, graph_get, methods=["GET"])])
    app.state.media = media
    return app


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m tests.fakes.meta --port 18080 …``."""
    parser = base_arg_parser("Fake Meta WhatsApp Cloud API", default_port=18080)
    parser.add_argument("--app-secret", default="fake-app-secret")
    parser.add_argument("--token", action="append", dest="tokens", help="valid Bearer token (repeatable)")
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE_PER_SECOND, help="sends/s per number, 0=off")
    parser.add_argument("--pair-limit", type=int, default=0, help="sends per recipient per window, 0=off")
    parser.add_argument("--pair-window-s", type=float, default=6.0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of sends answered 500")
    args = parser.parse_args(argv)
    config = MetaFakeConfig(
        valid_tokens=args.tokens or [DEFAULT_TOKEN],
        rate_per_second=args.rate or None,
        pair_limit=args.pair_limit or None,
        pair_window_s=args.pair_window_s,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        webhook_url=args.webhook_url,
        app_secret=args.app_secret,
    )
    serve_forever(create_app(config), args)


if __name__ == "__main__":
    main()
