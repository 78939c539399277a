"""Building blocks shared by the fake provider servers: limits, hangs, dropped connections, webhooks, CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

logger = logging.getLogger("tests.fakes")

HANG_MS_DEFAULT = 10_000
"""How long a forced ``"timeout"`` keeps a request waiting unless the client goes away first."""


class SlidingWindow:
    """Counts events per key over the last ``window_s`` seconds (a deque of timestamps per key)."""

    def __init__(self) -> None:
        self._events: dict[str, deque[float]] = {}

    def hit(self, key: str, *, limit: int, window_s: float, now: float | None = None) -> bool:
        """Record an event for ``key`` unless ``limit`` already fall in the window; True if recorded."""
        now = time.monotonic() if now is None else now
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - window_s:
            events.popleft()
        if len(events) >= limit:
            return False
        events.append(now)
        return True

    def clear(self) -> None:
        """Forget every recorded event."""
        self._events.clear()


async def sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Wait ``seconds`` or until the client disconnects, whichever is first; True if it disconnected.

    Used for simulated hangs so that a client timeout also frees the server task (and server shutdown stays
    fast). Call it only after the request body has been read.
    """
    disconnected = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal disconnected
            while (await request.receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        await anyio.sleep(seconds)
        group.cancel_scope.cancel()
    return disconnected


class ConnectionDroppedError(Exception):
    """Raised inside the fake after the response has started, so uvicorn closes the socket mid-response."""


class DropConnection(Response):
    """A response that announces a body, sends none and aborts: the client sees the peer close the socket."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Start the response with a Content-Length it never honours, then abort."""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
        raise ConnectionDroppedError("fake server dropped the connection on purpose")


class _QuietDrops(logging.Filter):
    """Keeps uvicorn's 'Exception in ASGI application' traceback for deliberate drops out of the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDroppedError))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


def json_error(status: int, body: Mapping[str, Any]) -> JSONResponse:
    """A JSON response with ``status``."""
    return JSONResponse(dict(body), status_code=status)


def update_config(config: Any, changes: Mapping[str, Any]) -> list[str]:
    """Set the dataclass fields named in ``changes`` on ``config``; return the unknown names (not applied)."""
    known = {f.name for f in fields(config)}
    unknown = [name for name in changes if name not in known]
    for name, value in changes.items():
        if name in known:
            setattr(config, name, value)
    return unknown


@dataclass
class WebhookDelivery:
    """One webhook POST made by a fake, for ``GET /_fake/webhooks``."""

    url: str
    event: str
    http_status: int | None
    error: str | None = None


class WebhookPoster:
    """Posts webhooks from background tasks over one ``httpx.AsyncClient`` and records each outcome."""

    def __init__(self, *, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.deliveries: list[WebhookDelivery] = []

    async def start(self) -> None:
        """Create the HTTP client (called from the app's lifespan)."""
        self._client = httpx.AsyncClient(timeout=self._timeout_s)

    async def stop(self) -> None:
        """Cancel pending posts and close the client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def schedule(self, posts: Sequence[tuple[str, str, bytes, dict[str, str]]], *, gap_s: float) -> None:
        """Post ``(url, event, body, headers)`` items in order, ``gap_s`` apart, from a background task."""
        task = asyncio.get_running_loop().create_task(self._post_all(posts, gap_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_all(self, posts: Sequence[tuple[str, str, bytes, dict[str, str]]], gap_s: float) -> None:
        assert self._client is not None, "WebhookPoster.start() was not called"
        for index, (url, event, body, headers) in enumerate(posts):
            if index and gap_s > 0:
                await asyncio.sleep(gap_s)
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                logger.warning("fake webhook to %s failed: %r", url, exc)
                self.deliveries.append(WebhookDelivery(url, event, None, type(exc).__name__))
            else:
                self.deliveries.append(WebhookDelivery(url, event, response.status_code))


def base_arg_parser(description: str, default_port: int) -> argparse.ArgumentParser:
    """Arguments every fake accepts on the command line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto")
    return parser


def serve_forever(app: Any, args: argparse.Namespace) -> None:
    """Run ``app`` under uvicorn in this process as the parsed ``base_arg_parser`` arguments say.

    ``--loop auto`` / ``--http auto`` pick uvloop / httptools when installed (about 1.7x the capacity of
    asyncio + h11 under load), else asyncio / h11.
    """
    import importlib.util

    import uvicorn

    loop = args.loop if args.loop != "auto" else ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    http = args.http if args.http != "auto" else ("httptools" if importlib.util.find_spec("httptools") else "h11")
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        loop=loop,
        http=http,
        backlog=4096,
        timeout_keep_alive=30,
    )


def fake_app(
    fake: Any, routes: list[Route], *, validate: Callable[[dict[str, Any]], str | None] | None = None
) -> Starlette:
    """A fake provider's ASGI app: its own ``routes`` plus the shared ``/_fake/*`` control surface.

    ``fake`` has ``config``, ``forced``, ``sends``, ``webhooks`` (a :class:`WebhookPoster`) and ``reset()``;
    ``validate`` may refuse a config change with a reason before it is applied.
    """

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def get_config(request: Request) -> Response:
        return JSONResponse({**asdict(fake.config), "forced_errors": list(fake.forced)})

    async def set_config(request: Request) -> Response:
        changes = await request.json()
        if not isinstance(changes, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        fake.forced.extend(changes.pop("forced_errors", []))
        problem = validate(changes) if validate else None
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        unknown = update_config(fake.config, changes)
        if unknown:
            return JSONResponse({"error": f"unknown settings: {unknown}"}, status_code=400)
        return await get_config(request)

    async def reset(request: Request) -> Response:
        fake.reset()
        return JSONResponse({"ok": True})

    async def sends(request: Request) -> Response:
        return JSONResponse([asdict(send) for send in fake.sends])

    async def webhooks(request: Request) -> Response:
        return JSONResponse([asdict(delivery) for delivery in fake.webhooks.deliveries])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await fake.webhooks.start()
        try:
            yield
        finally:
            await fake.webhooks.stop()

    app = Starlette(
        routes=[
            *routes,
            Route("/_fake/health", health, methods=["GET"]),
            Route("/_fake/config", get_config, methods=["GET"]),
            Route("/_fake/config", set_config, methods=["POST"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/sends", sends, methods=["GET"]),
            Route("/_fake/webhooks", webhooks, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.fake = fake
    return app
