"""Why a domain action (``libs/<aggregate>/actions.py``) refused what it was asked.

Actions raise these; each caller renders them its own way, by type: the API answers ``status`` with the text
as the reason (one exception handler in :mod:`libs.api.app`), the CLI prints the text and exits non-zero.

A refusal here is about the current state, never about the shape of the input: the request was valid by the
published schema (an invalid one is a 422 before any action runs), so it answers 409, not 422 — a client
generated from ``/openapi.json`` can tell "my request is wrong" from "not now, or not with that row"::

    ZapqError
    └── RefusedError                 409 unless a subclass says otherwise
        ├── NotFoundError            404  the row asked about does not exist
        ├── ConflictError            409  not in a state that allows it (the text says which)
        ├── InvalidError             409  the input names something that cannot be used (another company's row)
        │   └── RuleViolationError   409  a WhatsApp rule forbids it now (``reason``: outside_service_window, …)
        └── QueueUnavailableError    503  the job could not be enqueued: nothing was done, retry later
"""

from __future__ import annotations

from typing import Any

from libs.errors import ZapqError


class RefusedError(ZapqError):
    """An action refused; the text says why (for humans), ``status`` is the HTTP status the API answers, and
    ``details`` (optional) what a program needs to act on it."""

    status = 409
    details: Any = None


class NotFoundError(RefusedError):
    """The row the action is about does not exist."""

    status = 404


class ConflictError(RefusedError):
    """The row is not in a state that allows the action."""

    status = 409


class InvalidError(RefusedError):
    """The input names something that cannot be used (a missing company, another company's connection)."""

    status = 409


class RuleViolationError(InvalidError):
    """A WhatsApp rule forbids the message now; ``reason`` is its code (:mod:`libs.rules.reasons`), ``details``
    carries it with what the caller needs (when the service window closed, …)."""

    def __init__(self, reason: str, text: str, **details: Any) -> None:
        super().__init__(f"{reason}: {text}")
        self.reason = reason
        self.details = {"reason": reason, **details}


class QueueUnavailableError(RefusedError):
    """The action's job could not be enqueued, so the action was not done (its transaction rolled back)."""

    status = 503
