"""Logging and Sentry: what every process sets up before it builds its broker.

Only real failures reach Sentry: one event per dead letter (fingerprint = actor + error type) and
threshold alerts. Per-attempt errors that Dramatiq's integration would report are dropped, and every
event is scrubbed of phone numbers, tokens, secrets and message bodies before it leaves the process.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from libs.settings import Settings

#: 8+ digits, optionally with a leading +: phone numbers and wa_ids.
PHONE = re.compile(r"\+?\d[\d \-]{6,}\d")
SECRET_KEYS = re.compile(
    r"(token|secret|password|passwd|authorization|apikey|api_key|signature|cookie|dsn|body|text|caption|"
    r"recipient|wa_id|phone|from|to|number)",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def mask_phone(value: str) -> str:
    """``+5511999998888`` → ``+55…88``: enough to tell numbers apart in a log, not to dial them."""
    digits = re.sub(r"\D", "", value)
    return f"{digits[:2]}…{digits[-2:]}" if len(digits) > 4 else "…"


def scrub(value: Any, depth: int = 0) -> Any:
    """Recursively redact secret-looking keys and phone-number-looking strings."""
    if depth > 20:
        return REDACTED
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and SECRET_KEYS.search(k) else scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, depth + 1) for v in value]
    if isinstance(value, str):
        return PHONE.sub(lambda m: mask_phone(m.group()), value)
    return value


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


class PhoneMaskingFilter(logging.Filter):
    """Mask phone numbers in every log record that passes through a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with phone numbers masked."""
        message = record.getMessage()
        masked = PHONE.sub(lambda m: mask_phone(m.group()), message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: str = "INFO") -> None:
    """Structured-enough plain logs with phone masking on the root handler."""
    root = logging.getLogger()
    if not root.handlers:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if not any(isinstance(f, PhoneMaskingFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskingFilter())
    root.setLevel(level)
