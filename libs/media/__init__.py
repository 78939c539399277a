"""Media files: uploads to send by id, inbound media fetched from the provider and kept, their storage.

* :mod:`libs.media.limits` — Meta's per-type MIME and size limits, and a light check of the first bytes;
* :mod:`libs.media.storage` — where the bytes live: a local directory or an S3-compatible bucket (streamed);
* :mod:`libs.media.spool` — a stream written to a temporary file while counted and hashed (never in memory);
* :mod:`libs.media.store` — the ``media`` table (SQL);
* :mod:`libs.media.actions` — upload, read, prune (what the API and the scheduler call);
* :mod:`libs.media.provider` — the providers' media endpoints (Meta upload / resolve / download, the bridge's
  base64 endpoint);
* :mod:`libs.media.fetch` — the inbound ``media`` job: resolve, download, check, store, record;
* :mod:`libs.media.outbound` — a zapq media id turned into the provider's id for a send (cached per connection).

Errors (:mod:`libs.media.errors`)::

    MediaRefusedError (PermanentError)           a file zapq will not keep — ``status`` 413 or 415
    ├── MediaTooLargeError                          over its type's limit (or the declared size)
    └── UnsupportedMediaTypeError                   a MIME type Meta refuses, or bytes that are not that type
    MediaIntegrityError (TransientError)          a download whose size or SHA-256 differs from what was declared
    MediaUrlExpiredError (TransientError)         the provider's download URL no longer answers (a new one is asked)
    MediaNotFoundError (RecordNotFoundError)      no such media (or not the caller's company's)
"""
