"""What the observability tests share: the SDK's flush and reset, the secrets to look for, test actors."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import sentry_sdk

from libs.errors import PermanentError
from libs.middleware.policy import RetryPolicy

#: Service name init_sentry is given in these tests (the ``service`` tag and ``server_name``).
SERVICE = "obs-tests"
FLUSH_TIMEOUT_S = 5.0
#: The queue of the test actors (its dead letters go to the real recorder on ``dead-letter``).
QUEUE = "obs"
PHONE = "+5511999998888"
TOKEN = "EAAGm0PX4ZCpsBAKZBzQ1xY7rT9uVwLd3NfHs2kJ8eR5"
#: Forms of the number that must never leave the process (international, bare, local part).
PHONE_FORMS = (PHONE, PHONE.lstrip("+"), "999998888")
#: How ``libs.middleware.deadletter.qualified_name`` names PermanentError (the error type in fingerprints).
PERMANENT = f"{PermanentError.__module__}.{PermanentError.__qualname__}"


def flush() -> None:
    """Send everything the SDK holds, client reports included; returns once the fake has answered."""
    sentry_sdk.flush(timeout=FLUSH_TIMEOUT_S)


def reset_sentry() -> None:
    """Close the SDK's client and leave the process as if ``sentry_sdk.init`` had never been called."""
    sentry_sdk.get_client().close(timeout=FLUSH_TIMEOUT_S)
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_isolation_scope().clear()
    sentry_sdk.get_current_scope().clear()
    assert not sentry_sdk.get_client().is_active()


class Attempts:
    """Counts the attempts of a test actor across worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def next(self) -> int:
        """Record one attempt; return its number (1-based)."""
        with self._lock:
            self.count += 1
            return self.count


def declare(broker: Any, fn: Callable[..., None], name: str, policy: RetryPolicy) -> dramatiq.Actor[Any, Any]:
    """Declare ``fn`` on the shared broker under a per-test actor name, on :data:`QUEUE`."""
    return dramatiq.actor(
        broker=broker, actor_name=f"{name}_{uuid.uuid4().hex[:8]}", queue_name=QUEUE, retry_policy=policy
    )(fn)


def assert_clean(raw: bytes) -> None:
    """No form of the phone number, nor the token, in what was sent."""
    for secret in (*PHONE_FORMS, TOKEN):
        assert secret.encode() not in raw, f"{secret!r} reached Sentry"
