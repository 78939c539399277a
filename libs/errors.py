"""The one typed exception tree of zapq.

Retry decisions are made by ``isinstance`` against this tree, never by matching error text::

    ZapqError
    ├── TransientError ─────────────── retried with the queue's policy (unknown exceptions count as this)
    │   ├── DependencyUnavailableError   Postgres / Redis / a provider's network is down
    │   └── ProviderTransientError       5xx, timeout, connection reset, Meta 1/2/131000/131016/131057/133004
    │       └── ProviderTimeoutError
    ├── PermanentError ─────────────── dead-lettered at once, no further attempt
    │   ├── RecordNotFoundError          the row a message points at does not exist
    │   ├── ParseError                   a payload that can never be parsed
    │   ├── HoldExpiredError             a send held (connection inactive, campaign paused) past the maximum age
    │   └── ProviderPermanentError       invalid recipient, bad parameter, template problems, policy blocks
    │       ├── RuleRefusedError         a WhatsApp rule refused it (``reason``): the message fails, no dead
    │       │   │                        letter (131047, 131049, 470-479; ``libs.rules.reasons``)
    │       │   ├── InvalidRecipientError    131026, 131050, Baileys "exists: false"
    │       │   └── TemplateError            132000-132016
    │       └── ConnectionNeedsAttentionError   0 / 190 / 401: the credentials must be fixed by a human
    └── Defer ──────────────────────── control signal: run again after ``delay_ms``, no attempt consumed
        ├── RateLimited                  throttled by our token bucket or by the provider (130429, 131056, 4, 80007)
        │   └── ProviderRateLimited      the provider's refusal (a ProviderError too)
        │       └── PairRateLimited      131056: too many messages to one recipient; backs off 4**X s
        └── ConnectionClosed             the provider's session is down (Evolution "Connection Closed"): the sender
                                         marks the connection inactive and holds its sends until it is back

``ProviderError`` is a mixin carried by every provider exception so that callers can read the provider's
code and HTTP status without parsing text, and whether the request may have reached the provider although it
failed (``maybe_delivered``: set where the failure is translated, ``libs.providers._http``).
"""

from __future__ import annotations


class ZapqError(Exception):
    """Base class of every exception zapq raises on purpose."""


class TransientError(ZapqError):
    """A failure that may succeed if tried again later (retried with the queue's policy)."""


class PermanentError(ZapqError):
    """A failure that will never succeed by retrying: the message is dead-lettered at once."""


class DependencyUnavailableError(TransientError):
    """A dependency we own (Postgres, Redis) could not be reached."""


class RecordNotFoundError(PermanentError):
    """The row a job refers to does not exist (a missing row is final, never retried)."""


class ParseError(PermanentError):
    """A payload could not be parsed into zapq's types; ``path`` says where."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class HoldExpiredError(PermanentError):
    """A send waited on a hold (its connection inactive, its campaign paused) longer than the maximum age."""


class Defer(ZapqError):
    """Run the job again after ``delay_ms`` without consuming an attempt (bounded by a defer budget)."""

    def __init__(self, delay_ms: int, reason: str = "deferred") -> None:
        super().__init__(f"{reason} (retry in {delay_ms} ms)")
        self.delay_ms = max(0, int(delay_ms))
        self.reason = reason


class RateLimited(Defer):
    """A throughput limit was hit (ours or the provider's); try again after ``delay_ms``."""


class ProviderError(ZapqError):
    """Mixin data for errors raised by a provider client: provider name, its code and HTTP status.

    ``maybe_delivered``: the provider may have accepted the request although we saw an error (a send must then
    not be released for another attempt before it is reconciled). By default, true when no HTTP answer was
    seen (and for a timeout); the translation of network errors says which ones never reached the provider.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        code: int | None = None,
        http_status: int | None = None,
        details: str = "",
        maybe_delivered: bool | None = None,
    ) -> None:
        # Not super(): in diamonds with Defer the next class would expect a delay, not a message.
        ZapqError.__init__(self, message)
        self.provider = provider
        self.code = code
        self.http_status = http_status
        self.details = details
        self.maybe_delivered = self._default_maybe_delivered() if maybe_delivered is None else maybe_delivered

    def _default_maybe_delivered(self) -> bool:
        return self.http_status is None


class ProviderTransientError(ProviderError, TransientError):
    """The provider failed in a way that may pass (5xx, downtime codes, network errors)."""


class ProviderTimeoutError(ProviderTransientError):
    """The provider did not answer in time."""

    def _default_maybe_delivered(self) -> bool:
        return True


class ProviderPermanentError(ProviderError, PermanentError):
    """The provider refused the request for a reason retrying cannot fix."""


class RuleRefusedError(ProviderPermanentError):
    """A WhatsApp rule refused the message (window, marketing limit, template, policy): not a fault.

    The sender ends the message ``failed`` with :attr:`reason` (a :mod:`libs.rules.reasons` code) and finishes
    the job: no dead letter, no Sentry event, nothing toward the dead-letter alert. The provider client sets
    ``reason`` from its code where it translates the error; :attr:`default_reason` otherwise.
    """

    default_reason = "policy"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        reason: str | None = None,
        code: int | None = None,
        http_status: int | None = None,
        details: str = "",
        maybe_delivered: bool | None = None,
    ) -> None:
        ProviderError.__init__(
            self,
            message,
            provider=provider,
            code=code,
            http_status=http_status,
            details=details,
            maybe_delivered=maybe_delivered,
        )
        self.reason = reason or self.default_reason


class InvalidRecipientError(RuleRefusedError):
    """The recipient cannot receive this message (not on WhatsApp, opted out, outside the 24 h window)."""

    default_reason = "undeliverable"


class TemplateError(RuleRefusedError):
    """The template is missing, unapproved, paused, disabled or its parameters do not match."""

    default_reason = "template_rejected"


class ConnectionNeedsAttentionError(ProviderPermanentError):
    """The connection's credentials are invalid or expired; a human must fix the connection."""


class ProviderRateLimited(ProviderError, RateLimited):
    """The provider throttled us (Meta 130429 / 131056 / 4 / 80007)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        delay_ms: int,
        code: int | None = None,
        http_status: int | None = None,
        details: str = "",
    ) -> None:
        ProviderError.__init__(self, message, provider=provider, code=code, http_status=http_status, details=details)
        self.delay_ms = max(0, int(delay_ms))
        self.reason = message


class PairRateLimited(ProviderRateLimited):
    """The provider refused sends to this one recipient for now (Meta 131056, the pair rate limit).

    ``delay_ms`` already grows with the pair's refusals in a row (4**X s); the sender counts them per connection
    and recipient and holds the pair's other sends for as long.
    """


class ConnectionClosed(ProviderError, Defer):
    """The provider's WhatsApp session for the connection is closed (a Baileys bridge answering "Connection
    Closed"): not the message's fault and not for retrying at once — the connection is marked inactive and its
    sends are held until it is active again."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        delay_ms: int = 10_000,
        code: int | None = None,
        http_status: int | None = None,
        details: str = "",
    ) -> None:
        ProviderError.__init__(self, message, provider=provider, code=code, http_status=http_status, details=details)
        self.delay_ms = max(0, int(delay_ms))
        self.reason = message
