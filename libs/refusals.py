"""Why a domain action (``libs/<aggregate>/actions.py``) refused what it was asked.

Actions raise these; each caller renders them its own way, by type: the API answers ``status`` with the text
as the reason (one exception handler in :mod:`libs.api.app`), the CLI prints the text and exits non-zero::

    ZapqError
    └── RefusedError                 409 unless a subclass says otherwise
        ├── NotFoundError            404  the row asked about does not exist
        ├── ConflictError            409  not in a state that allows it (the text says which)
        ├── InvalidError             422  the input names something that cannot be used (another company's row)
        └── QueueUnavailableError    503  the job could not be enqueued: nothing was done, retry later
"""

from __future__ import annotations

from libs.errors import ZapqError


class RefusedError(ZapqError):
    """An action refused; the text says why (for humans), ``status`` is the HTTP status the API answers."""

    status = 409


class NotFoundError(RefusedError):
    """The row the action is about does not exist."""

    status = 404


class ConflictError(RefusedError):
    """The row is not in a state that allows the action."""

    status = 409


class InvalidError(RefusedError):
    """The input names something that cannot be used (a missing company, another company's connection)."""

    status = 422


class QueueUnavailableError(RefusedError):
    """The action's job could not be enqueued, so the action was not done (its transaction rolled back)."""

    status = 503
