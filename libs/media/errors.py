"""The media exception tree (drawn in :mod:`libs.media`); classification is by type, never by text."""

from __future__ import annotations

from libs.errors import PermanentError, RecordNotFoundError, TransientError


class MediaRefusedError(PermanentError):
    """A file zapq will not keep; ``status`` is the HTTP answer (413 too large, 415 unsupported type)."""

    status = 400


class MediaTooLargeError(MediaRefusedError):
    """The file is larger than its type's limit (or than the size its provider declared)."""

    status = 413


class UnsupportedMediaTypeError(MediaRefusedError):
    """A MIME type Meta does not accept for any message kind, or bytes that are not of the declared type."""

    status = 415


class MediaIntegrityError(TransientError):
    """A download whose size or SHA-256 differs from what the provider declared (retried by the queue policy)."""


class MediaUrlExpiredError(TransientError):
    """The provider's download URL did not answer with the file (expired after 5 minutes): a retry asks again."""


class MediaNotFoundError(RecordNotFoundError):
    """No such media, or not one the caller may see."""
