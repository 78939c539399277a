"""A fake CRM: the receiver of zapq's event webhooks, verifying every delivery with ``standardwebhooks``.

It behaves as a careful receiver would: verifies the signature over the exact body bytes (any language's
Standard Webhooks library does the same), dedups on ``webhook-id``, and records what it accepted. Tests change
its answer at will: a status code (500, 410, 302…), a delay, a huge body, or a list of answers to give first.

In-process: serve ``CrmReceiver(...).app`` with :func:`tests.fakes.server.running_app` and read
``receiver.received``. As a process (bench, dev stack)::

    python -m tests.fakes.crm --port 18090 --secret whsec_… [--latency-ms 50] [--no-verify]

with ``GET /_fake/received`` (the list), ``GET /_fake/stats`` (counts), ``POST /_fake/config`` (``status``,
``latency_ms``) and ``POST /_fake/reset``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.common import base_arg_parser, serve_forever


@dataclass(frozen=True)
class Delivery:
    """One accepted delivery: the endpoint path, its headers, body, parsed payload and arrival time."""

    path: str
    webhook_id: str
    timestamp: int
    signature: str
    body: bytes
    payload: dict[str, Any]
    received_at: float

    @property
    def type(self) -> str:
        """The event type."""
        return str(self.payload["type"])

    @property
    def data(self) -> dict[str, Any]:
        """The event's data."""
        data: dict[str, Any] = self.payload["data"]
        return data


@dataclass
class CrmConfig:
    """How the receiver answers."""

    #: ``whsec_…`` secrets accepted (any of them verifies); empty: deliveries are not verified.
    secrets: list[str] = field(default_factory=list)
    #: Status code of the answer to a verified delivery.
    status: int = 200
    #: Answers given (in order) before ``status``: e.g. ``[500, 500]`` fails the first two deliveries.
    script: list[int] = field(default_factory=list)
    latency_ms: float = 0.0
    #: Bytes of body in each answer (to test that a huge answer costs one bounded attempt).
    body_bytes: int = 0
    #: Extra headers of each answer (``location`` for a redirect, ``retry-after``…).
    headers: dict[str, str] = field(default_factory=dict)
    #: Contacts (``data.contact.wa_id``) whose events are answered 500: how many more times (-1: always).
    failing_contacts: dict[str, int] = field(default_factory=dict)
    #: Per request path, settings that differ (``{"/slow": {"latency_ms": 3000}}``).
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_path(self, path: str) -> CrmConfig:
        """The settings that apply to requests to ``path``."""
        changes = self.paths.get(path)
        if not changes:
            return self
        merged = CrmConfig(**{name: getattr(self, name) for name in self.__dataclass_fields__})
        for name, value in changes.items():
            setattr(merged, name, value)
        return merged


def _contact(body: bytes) -> str | None:
    try:
        contact = orjson.loads(body)["data"].get("contact") or {}
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return contact.get("wa_id") if isinstance(contact, dict) else None


class CrmReceiver:
    """The receiver's state and ASGI app (``.app``)."""

    def __init__(self, config: CrmConfig | None = None) -> None:
        self.config = config or CrmConfig()
        self.received: list[Delivery] = []
        #: ``webhook-id`` of every verified request, duplicates included, in arrival order.
        self.arrivals: list[str] = []
        self.refused = 0
        self.attempts = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.app = Starlette(
            routes=[
                Route("/_fake/received", self._list, methods=["GET"]),
                Route("/_fake/stats", self._stats, methods=["GET"]),
                Route("/_fake/config", self._configure, methods=["POST"]),
                Route("/_fake/reset", self._reset, methods=["POST"]),
                Route("/_fake/health", self._health, methods=["GET"]),
                Route("/{path:path}", self._deliver, methods=["POST"]),
            ]
        )
        self.app.state.crm = self

    # -- the receiver ----------------------------------------------------------------------------------

    async def _deliver(self, request: Request) -> Response:
        body = await request.body()
        config = self.config.for_path(request.url.path)
        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)
        headers = dict(request.headers)
        if config.secrets and not self._verified(body, headers):
            with self._lock:
                self.refused += 1
            return JSONResponse({"error": "bad signature"}, status_code=400)
        with self._lock:
            self.attempts += 1
            self.arrivals.append(headers.get("webhook-id", ""))
            status = config.script.pop(0) if config.script else config.status
            contact = _contact(body)
            left = config.failing_contacts.get(contact or "", 0)
            if left:
                status = 500
                if left > 0:
                    config.failing_contacts[contact or ""] = left - 1
            if 200 <= status < 300 and headers["webhook-id"] not in self._seen:
                self._seen.add(headers["webhook-id"])
                self.received.append(
                    Delivery(
                        path=request.url.path,
                        webhook_id=headers["webhook-id"],
                        timestamp=int(headers["webhook-timestamp"]),
                        signature=headers["webhook-signature"],
                        body=body,
                        payload=orjson.loads(body),
                        received_at=time.time(),
                    )
                )
                self._arrived.notify_all()
        return Response(b"x" * config.body_bytes, status_code=status, headers=config.headers)

    def _verified(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.config.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            return True
        return False

    # -- waiting on it from a test ---------------------------------------------------------------------

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Delivery]:
        """Wait until ``count`` distinct deliveries arrived; all of them so far (raise on timeout)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.received)} of {count} deliveries arrived in {timeout} s")
                self._arrived.wait(left)
            return list(self.received)

    def reset(self) -> None:
        """Forget everything received; back to answering 200."""
        with self._lock:
            self.received.clear()
            self.arrivals.clear()
            self._seen.clear()
            self.refused = self.attempts = 0
            secrets = self.config.secrets
            self.config = CrmConfig(secrets=secrets)

    # -- control surface -------------------------------------------------------------------------------

    async def _list(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"path": d.path, "webhook_id": d.webhook_id, "type": d.type, "data": d.data, "at": d.received_at}
                for d in self.received
            ]
        )

    async def _stats(self, request: Request) -> Response:
        return JSONResponse({"received": len(self.received), "attempts": self.attempts, "refused": self.refused})

    async def _configure(self, request: Request) -> Response:
        changes = await request.json()
        for name, value in changes.items():
            if not hasattr(self.config, name):
                return JSONResponse({"error": f"unknown setting {name}"}, status_code=400)
            setattr(self.config, name, value)
        return JSONResponse({"ok": True})

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m tests.fakes.crm --port 18090 --secret whsec_…``."""
    parser = base_arg_parser("Fake CRM: receives zapq's event webhooks", default_port=18090)
    parser.add_argument("--secret", action="append", dest="secrets", default=[], help="whsec_… (repeatable)")
    parser.add_argument("--no-verify", action="store_true", help="accept without checking signatures (bench)")
    args = parser.parse_args(argv)
    receiver = CrmReceiver(CrmConfig(secrets=[] if args.no_verify else args.secrets, latency_ms=args.latency_ms))
    serve_forever(receiver.app, args)


if __name__ == "__main__":
    main()
