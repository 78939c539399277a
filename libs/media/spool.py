"""A stream written to a temporary file while it is counted and hashed: what every stored file goes through.

Only one chunk is ever in memory. The caller's ``limit`` is checked as bytes arrive, so an oversized stream
is refused at its first byte past the limit, and the partial file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from libs.media.errors import MediaTooLargeError
from libs.media.limits import HEAD_BYTES


@dataclass
class Spool:
    """A temporary file being written: its size, SHA-256 and first bytes so far."""

    path: str
    limit: int
    size: int = 0
    head: bytes = b""
    _file: BinaryIO | None = None
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; :class:`MediaTooLargeError` once the file passes ``limit``."""
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            raise MediaTooLargeError(f"file larger than {self.limit} bytes")
        if len(self.head) < HEAD_BYTES:
            self.head = (self.head + chunk)[:HEAD_BYTES]
        self._hash.update(chunk)
        assert self._file is not None
        self._file.write(chunk)

    async def write_all(self, chunks: AsyncIterable[bytes]) -> None:
        """Append every chunk of ``chunks``."""
        async for chunk in chunks:
            self.write(chunk)

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of what was written."""
        return self._hash.hexdigest()

    def close(self) -> None:
        """Flush and close the file (it stays on disk until the context ends)."""
        if self._file is not None and not self._file.closed:
            self._file.close()


@contextlib.contextmanager
def spool(directory: str, limit: int) -> Iterator[Spool]:
    """A :class:`Spool` in ``directory`` (created if missing), removed when the context ends unless the caller
    moved it away (``os.replace``)."""
    os.makedirs(directory, exist_ok=True)
    handle, path = tempfile.mkstemp(prefix="spool-", dir=directory)
    target = Spool(path=path, limit=limit, _file=os.fdopen(handle, "wb"))
    try:
        yield target
    finally:
        target.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
