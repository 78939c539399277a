"""Logging and Sentry: what every process sets up before it builds its broker.

Only real failures reach Sentry: one event per dead letter (fingerprint = actor + error type) and
threshold alerts. Per-attempt errors that Dramatiq's integration would report are dropped, and every
event is scrubbed of phone numbers, tokens, secrets and message bodies before it leaves the process.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from libs import tracing
from libs.settings import Settings

#: A phone number or wa_id (E.164: 8 to 15 digits, optionally a leading + and single spaces or dashes between
#: digits) standing on its own: not inside a word, an id or a path (``order-12345678``, ``/v21.0/1065403522/``).
PHONE = re.compile(r"(?<![\w./-])\+?\d(?:[ -]?\d){7,14}(?![\w/-]|\.\w)")
#: What is never a phone number although it holds digit runs: UUIDs (job ids), ISO dates and times, Meta
#: message ids, event ids and long hex or digit strings (digests, Redis ids). Left as they are, so an id can be
#: copied from a log into ``zapq job``.
PROTECTED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\bwamid\.[A-Za-z0-9_=+/-]+"
    r"|\b(?:evt|ping)_[0-9a-fA-F]+"
    r"|\b[0-9a-fA-F]{16,}\b"
)
#: Credentials inside free text: Meta access tokens, ``Bearer``/``Basic`` values, JWTs, ``…token=…`` pairs (a
#: query string's ``hub.verify_token=…`` or ``access_token=…`` as well).
TOKEN = re.compile(
    r"\bEAA[A-Za-z0-9]{20,}"
    r"|\b(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|(?<![A-Za-z0-9_.])(?i:[A-Za-z0-9_.]*(?:token|api_?key|secret|password))=[^\s&\"',;]+"
)
#: Keys whose values are redacted. Short words must be the whole key or a ``_``/``-``/``.`` separated part of
#: it: as substrings they would hit Sentry's own ``contexts`` ("text") and break the event.
SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|authorization|apikey|api_key|signature|cookie|dsn|caption|recipient|wa_id|"
    r"phone)|(?:^|[_.-])(body|text|from|to|number)(?:$|[_.-])",
    re.IGNORECASE,
)
#: Fields sent verbatim: Sentry needs its ids, times and versions intact, and a hex id, a UUID, an ISO date or a
#: commit sha often holds what looks like a phone number (8+ digits and dashes). None of them carries user data.
VERBATIM_KEYS = frozenset(
    {
        "event_id",
        "trace_id",
        "span_id",
        "parent_span_id",
        "timestamp",
        "start_timestamp",
        "release",
        "dist",
        "sdk",
        "modules",
        "message_id",
        "dramatiq_message_id",
    }
)
REDACTED = "[redacted]"


def mask_phone(value: str) -> str:
    """``+5511999998888`` → ``+55…88``: enough to tell numbers apart in a log, not to dial them."""
    digits = re.sub(r"\D", "", value)
    return f"{digits[:2]}…{digits[-2:]}" if len(digits) > 4 else "…"


def _mask_phones(value: str) -> str:
    return PHONE.sub(lambda m: mask_phone(m.group()), value)


def scrub_text(value: str) -> str:
    """Mask phone numbers and redact credentials in free text; ids and timestamps stay as they are."""
    # Tokens first: masking a digit run inside a token would hide it from the token pattern.
    value = TOKEN.sub(REDACTED, value)
    parts: list[str] = []
    last = 0
    for match in PROTECTED.finditer(value):
        parts += (_mask_phones(value[last : match.start()]), match.group())
        last = match.end()
    parts.append(_mask_phones(value[last:]))
    return "".join(parts)


def scrub(value: Any, depth: int = 0) -> Any:
    """Recursively redact secret-looking keys, credentials and phone-number-looking strings."""
    if depth > 20:
        return REDACTED
    if isinstance(value, dict):
        return {k: _scrub_entry(k, v, depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _scrub_entry(key: Any, value: Any, depth: int) -> Any:
    if isinstance(key, str) and SECRET_KEYS.search(key):
        return REDACTED
    if key in VERBATIM_KEYS:
        return value
    return scrub(value, depth + 1)


def _before_send(event: Any, hint: dict[str, Any]) -> Any:
    exceptions = (event.get("exception") or {}).get("values") or []
    if any((exc.get("mechanism") or {}).get("type") == "dramatiq" for exc in exceptions):
        # A per-attempt failure: retries are handled by our middleware; dead letters are reported by it.
        return None
    return scrub(event)


def _before_breadcrumb(crumb: Any, hint: dict[str, Any]) -> Any:
    return scrub(crumb)


def init_sentry(settings: Settings, *, service: str) -> bool:
    """Initialise the Sentry SDK (before the broker is built); False when no DSN is configured."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment or settings.env,
        server_name=service,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        integrations=[DramatiqIntegration(), LoggingIntegration(event_level=None)],
        before_send=_before_send,
        before_breadcrumb=_before_breadcrumb,
        traces_sample_rate=0.0,
    )
    sentry_sdk.set_tag("service", service)
    return True


def init_tracing(settings: Settings, *, service: str) -> bool:
    """Turn OpenTelemetry tracing on when ``ZAPQ_OTEL_ENDPOINT`` is set (:mod:`libs.tracing`); False when off."""
    return tracing.configure(
        endpoint=settings.otel_endpoint, service=f"zapq-{service}", sample_ratio=settings.otel_sample_ratio
    )


class PhoneMaskingFilter(logging.Filter):
    """Mask phone numbers (and credentials) in every log record that passes through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message, exception text and stack with phone numbers masked."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed logging call: let the handler report it, as logging does
            return True
        masked = scrub_text(message)
        if masked != message:
            record.msg, record.args = _masked_call(record, masked)
        # The traceback of ``exc_info`` repeats the exception's message (often with the recipient in it).
        # Formatter.format reuses a cached ``exc_text``, so formatting and masking it here is what it prints.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        return True


def _masked_call(record: logging.LogRecord, masked: str) -> tuple[Any, Any]:
    """``(msg, args)`` for a record whose message needed masking.

    Masking the arguments one by one keeps the call's shape when that is enough: uvicorn's access formatter
    reads the request line from ``args``. Otherwise the masked message replaces the call.
    """
    if isinstance(record.args, tuple) and record.args:
        args = tuple(scrub_text(arg) if isinstance(arg, str) else arg for arg in record.args)
        try:
            candidate = str(record.msg) % args
        except (TypeError, ValueError):
            candidate = None
        if candidate is not None and scrub_text(candidate) == candidate:
            return record.msg, args
    return masked, None


#: Loggers that write through handlers of their own (uvicorn's), not the root's: filtered at the logger. The
#: access log carries each request's query string: Meta's handshake puts the verify token there.
OWN_HANDLER_LOGGERS = ("uvicorn.access", "uvicorn.error")


#: Libraries that log every request at INFO: one line per provider call is noise (and a cost) at 1,000 sends/s.
QUIET_LOGGERS = ("httpx", "httpcore")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, and — inside a job — its job id, queue,
    actor and the row id it works on (``message_id``, ``webhook_id``, ``campaign_id``, ``endpoint_id`` …)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (the message already scrubbed by :class:`PhoneMaskingFilter`)."""
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        data.update(_job_fields())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str, ensure_ascii=False)


def _job_fields() -> dict[str, Any]:
    """The current Dramatiq job's ids (the job each asyncio task or worker thread runs), if any."""
    try:
        from dramatiq.middleware import CurrentMessage

        message = CurrentMessage.get_current_message()
    except Exception:
        return {}
    if message is None:
        return {}
    fields: dict[str, Any] = {"job_id": message.message_id, "queue": message.queue_name, "actor": message.actor_name}
    for name, value in (message.kwargs or {}).items():
        if name.endswith("_id") and isinstance(value, int | str):
            fields[name] = value
    return fields


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Logs with phone masking on the root handler (and on uvicorn's loggers): plain lines, or with
    ``fmt="json"`` (``ZAPQ_LOG_FORMAT``) one JSON object per line with the current job's ids as fields."""
    root = logging.getLogger()
    if not root.handlers:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
        root.addHandler(handler)
    if fmt == "json":  # every handler of the process (Dramatiq's CLI installs its own) writes JSON lines
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    for filterer in [*root.handlers, *(logging.getLogger(name) for name in OWN_HANDLER_LOGGERS)]:
        if not any(isinstance(f, PhoneMaskingFilter) for f in filterer.filters):
            filterer.addFilter(PhoneMaskingFilter())
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
