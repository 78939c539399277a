"""A fake Sentry ingestion server: the real ``sentry-sdk`` sends to it over real HTTP on 127.0.0.1.

It accepts what Relay accepts from an SDK — ``POST /api/<project_id>/envelope/`` (and the legacy
``/store/``), gzip / deflate / brotli bodies, the key in ``X-Sentry-Auth`` or ``?sentry_key=`` — decodes
the envelope (a JSON header line, then items, each a JSON header line and a payload of ``length`` bytes or
up to the next newline) and records it. Requests it would refuse (wrong key or project, bad encoding,
malformed envelope) are answered 4xx and recorded in :attr:`SentryRecorder.rejected`.

Like Relay's normalisation, it notes the fields of an event that Sentry would discard (``contexts`` that is
not an object, an ``event_id`` that is not a UUID, …) in :meth:`SentryRecorder.problems` instead of
failing the request, so a test can assert that what the SDK sent would survive ingestion intact.

Tests read what arrived with :meth:`SentryRecorder.events` after ``sentry_sdk.flush()`` (which returns
once the transport has had its answers), or wait for it with :meth:`SentryRecorder.wait_for_events`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import running_app

try:  # the SDK only compresses with brotli when the module is installed
    import brotli
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

DEFAULT_PUBLIC_KEY = "publickey"
DEFAULT_PROJECT_ID = 1
#: How long :meth:`SentryRecorder.wait_for_events` waits unless told otherwise.
WAIT_DEADLINE_S = 5.0

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)
LEVELS = frozenset({"debug", "info", "warning", "error", "fatal"})


class EnvelopeError(ValueError):
    """A request body that is not a valid Sentry envelope."""


@dataclass(frozen=True, slots=True)
class EnvelopeItem:
    """One item of an envelope: its headers (``type``, ``length``, …) and its raw payload."""

    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        """The item type (``event``, ``transaction``, ``client_report``, ``session``, …)."""
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


@dataclass(frozen=True, slots=True)
class ReceivedEnvelope:
    """One accepted request: where it went, its auth and encoding, the decoded body and its items."""

    path: str
    project_id: int
    auth: dict[str, str]
    content_encoding: str
    raw: bytes
    headers: dict[str, Any]
    items: tuple[EnvelopeItem, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request the fake refused, with the status it answered and why."""

    path: str
    status_code: int
    reason: str


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[EnvelopeItem]]:
    """Split a decoded envelope into its header and items (the Sentry envelope format)."""
    header_line, _, rest = body.partition(b"\n")
    try:
        headers = json.loads(header_line) if header_line.strip() else {}
    except ValueError as exc:
        raise EnvelopeError(f"envelope header is not JSON: {exc}") from exc
    if not isinstance(headers, dict):
        raise EnvelopeError("envelope header is not an object")
    items: list[EnvelopeItem] = []
    pos = 0
    while pos < len(rest):
        end = rest.find(b"\n", pos)
        line, pos = (rest[pos:], len(rest)) if end == -1 else (rest[pos:end], end + 1)
        if not line.strip():
            continue  # a trailing newline
        try:
            item_headers = json.loads(line)
        except ValueError as exc:
            raise EnvelopeError(f"item header is not JSON: {exc}") from exc
        if not isinstance(item_headers, dict) or "type" not in item_headers:
            raise EnvelopeError("item header without a type")
        length = item_headers.get("length")
        if length is not None:
            payload = rest[pos : pos + int(length)]
            if len(payload) != int(length):
                raise EnvelopeError(f"item announces {length} bytes, {len(payload)} left")
            pos += int(length)
            if rest[pos : pos + 1] == b"\n":
                pos += 1
        else:
            end = rest.find(b"\n", pos)
            payload, pos = (rest[pos:], len(rest)) if end == -1 else (rest[pos:end], end + 1)
        items.append(EnvelopeItem(item_headers, payload))
    return headers, items


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """Undo the request's ``Content-Encoding`` (gzip, deflate — zlib-wrapped or raw — br, identity)."""
    encoding = content_encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
        if encoding == "br" and brotli is not None:
            return bytes(brotli.decompress(body))
    except (OSError, EOFError, zlib.error) as exc:
        raise EnvelopeError(f"body is not valid {encoding}: {exc}") from exc
    raise EnvelopeError(f"unsupported content encoding {content_encoding!r}")


def parse_auth(header: str) -> dict[str, str]:
    """``Sentry sentry_key=k, sentry_version=7, …`` → ``{"sentry_key": "k", …}``."""
    value = header.strip()
    if value.lower().startswith("sentry "):
        value = value[len("sentry ") :]
    pairs = (part.strip().partition("=") for part in value.split(","))
    return {key.strip(): val.strip() for key, _, val in pairs if key.strip()}


def is_timestamp(value: Any) -> bool:
    """A Unix time or an RFC 3339 string, as Sentry accepts for ``timestamp``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return True
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def event_problems(event: Any, envelope_event_id: str | None = None) -> list[str]:
    """Fields of ``event`` that Sentry's normalisation would reject or discard (empty when all is well)."""
    if not isinstance(event, dict):
        return ["event is not an object"]
    problems: list[str] = []
    event_id = event.get("event_id")
    if not isinstance(event_id, str) or not UUID.match(event_id):
        problems.append(f"event_id {event_id!r} is not a UUID")
    elif envelope_event_id is not None and event_id.replace("-", "") != envelope_event_id.replace("-", ""):
        problems.append(f"event_id {event_id!r} differs from the envelope's {envelope_event_id!r}")
    checks: dict[str, Callable[[Any], bool]] = {
        "contexts": lambda v: isinstance(v, dict) and all(isinstance(c, dict) for c in v.values()),
        "tags": lambda v: (isinstance(v, dict) and all(isinstance(t, str) for t in v.values()))
        or (isinstance(v, list) and all(isinstance(t, list) and len(t) == 2 for t in v)),
        "extra": lambda v: isinstance(v, dict),
        "fingerprint": lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v),
        "level": lambda v: v in LEVELS,
        "breadcrumbs": lambda v: isinstance(v, list) or (isinstance(v, dict) and isinstance(v.get("values"), list)),
        "exception": lambda v: isinstance(v, list) or (isinstance(v, dict) and isinstance(v.get("values"), list)),
        "timestamp": is_timestamp,
        "start_timestamp": is_timestamp,
    }
    for name, valid in checks.items():
        if name in event and not valid(event[name]):
            problems.append(f"{name} is malformed: {event[name]!r:.80}")
    crumbs = event.get("breadcrumbs")
    crumbs = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    for crumb in crumbs if isinstance(crumbs, list) else []:
        if isinstance(crumb, dict) and "timestamp" in crumb and not is_timestamp(crumb["timestamp"]):
            problems.append(f"breadcrumb timestamp {crumb['timestamp']!r} is not a time")
    trace = event.get("contexts", {}).get("trace") if isinstance(event.get("contexts"), dict) else None
    if isinstance(trace, dict):
        if "trace_id" in trace and not HEX32.match(str(trace["trace_id"])):
            problems.append(f"contexts.trace.trace_id {trace['trace_id']!r} is not 32 hex digits")
        if "span_id" in trace and not HEX16.match(str(trace["span_id"])):
            problems.append(f"contexts.trace.span_id {trace['span_id']!r} is not 16 hex digits")
    return problems


@dataclass
class SentryRecorder:
    """The fake's state and its ASGI app (``.app``); thread-safe, since the server runs in another thread."""

    public_key: str = DEFAULT_PUBLIC_KEY
    project_id: int = DEFAULT_PROJECT_ID
    _envelopes: list[ReceivedEnvelope] = field(default_factory=list)
    _rejected: list[Rejected] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/api/{project_id:int}/envelope/", self._envelope, methods=["POST"]),
                Route("/api/{project_id:int}/store/", self._store, methods=["POST"]),
            ]
        )

    # -- the server side -------------------------------------------------------------------------------

    def _reject(self, request: Request, status_code: int, reason: str) -> Response:
        with self._changed:
            self._rejected.append(Rejected(request.url.path, status_code, reason))
            self._changed.notify_all()
        return JSONResponse({"detail": reason}, status_code=status_code)

    async def _accept(self, request: Request) -> tuple[int, dict[str, str], str, bytes] | Response:
        """Auth, project and body decoding shared by both endpoints; a Response when refused."""
        project_id = int(request.path_params["project_id"])
        header = request.headers.get("x-sentry-auth")
        auth = parse_auth(header) if header else dict(request.query_params)
        if auth.get("sentry_key") != self.public_key:
            return self._reject(request, 401, f"bad or missing sentry_key {auth.get('sentry_key')!r}")
        if project_id != self.project_id:
            return self._reject(request, 403, f"unknown project {project_id}")
        encoding = request.headers.get("content-encoding", "")
        try:
            raw = decode_body(await request.body(), encoding)
        except EnvelopeError as exc:
            return self._reject(request, 400, str(exc))
        return project_id, auth, encoding, raw

    def _record(self, envelope: ReceivedEnvelope) -> None:
        with self._changed:
            self._envelopes.append(envelope)
            self._changed.notify_all()

    async def _envelope(self, request: Request) -> Response:
        accepted = await self._accept(request)
        if isinstance(accepted, Response):
            return accepted
        project_id, auth, encoding, raw = accepted
        try:
            headers, items = parse_envelope(raw)
        except EnvelopeError as exc:
            return self._reject(request, 400, str(exc))
        dsn = headers.get("dsn")
        if dsn is not None and urlsplit(str(dsn)).username != self.public_key:
            return self._reject(request, 401, f"envelope dsn {dsn!r} does not match the key")
        self._record(ReceivedEnvelope(request.url.path, project_id, auth, encoding, raw, headers, tuple(items)))
        return JSONResponse({"id": headers.get("event_id")})

    async def _store(self, request: Request) -> Response:
        accepted = await self._accept(request)
        if isinstance(accepted, Response):
            return accepted
        project_id, auth, encoding, raw = accepted
        try:
            event = json.loads(raw)
        except ValueError as exc:
            return self._reject(request, 400, f"store body is not JSON: {exc}")
        headers = {"event_id": event.get("event_id")} if isinstance(event, dict) else {}
        item = EnvelopeItem({"type": "event", "length": len(raw)}, raw)
        self._record(ReceivedEnvelope(request.url.path, project_id, auth, encoding, raw, headers, (item,)))
        return JSONResponse({"id": headers.get("event_id")})

    # -- the test side ---------------------------------------------------------------------------------

    def envelopes(self) -> list[ReceivedEnvelope]:
        """Every accepted envelope so far, in arrival order."""
        with self._changed:
            return list(self._envelopes)

    @property
    def rejected(self) -> list[Rejected]:
        """Every refused request so far."""
        with self._changed:
            return list(self._rejected)

    def items(self, item_type: str) -> list[EnvelopeItem]:
        """Every received item of ``item_type``."""
        return [item for env in self.envelopes() for item in env.items if item.type == item_type]

    def events(self) -> list[dict[str, Any]]:
        """Every received error/message event (``event`` items), decoded."""
        return [item.json() for item in self.items("event")]

    def raw_bytes(self) -> bytes:
        """All decoded request bodies, concatenated: what left the process, byte for byte."""
        return b"\n".join(env.raw for env in self.envelopes())

    def discarded(self, reason: str, category: str = "error") -> int:
        """Events the SDK reported (in client reports) as dropped for ``reason`` (e.g. ``before_send``)."""
        return sum(
            int(entry.get("quantity", 0))
            for item in self.items("client_report")
            for entry in item.json().get("discarded_events", [])
            if entry.get("reason") == reason and entry.get("category") == category
        )

    def problems(self) -> list[str]:
        """What Sentry's normalisation would have discarded from the received events."""
        found: list[str] = []
        for env in self.envelopes():
            for item in env.items:
                if item.type == "event":
                    found += event_problems(item.json(), env.headers.get("event_id"))
        return found

    def wait_for_events(self, count: int, *, timeout: float = WAIT_DEADLINE_S) -> list[dict[str, Any]]:
        """Block until at least ``count`` events arrived (or raise ``AssertionError`` after ``timeout``)."""
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: sum(1 for e in self._envelopes for i in e.items if i.type == "event") >= count, timeout
            )
        if not arrived:
            raise AssertionError(f"expected {count} Sentry event(s) within {timeout} s, got {len(self.events())}")
        return self.events()

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._changed:
            self._envelopes.clear()
            self._rejected.clear()


@contextlib.contextmanager
def running_sentry(
    *, public_key: str = DEFAULT_PUBLIC_KEY, project_id: int = DEFAULT_PROJECT_ID
) -> Iterator[tuple[str, SentryRecorder]]:
    """Serve a fake Sentry on a free 127.0.0.1 port; yield ``(dsn, recorder)``; stop it on exit."""
    recorder = SentryRecorder(public_key=public_key, project_id=project_id)
    with running_app(recorder.app) as base_url:
        host_port = base_url.removeprefix("http://")
        yield f"http://{public_key}@{host_port}/{project_id}", recorder
