"""Incremental CSV parsing of an upload stream: records come out as bytes come in, never the whole file.

Bytes are decoded incrementally (UTF-8, BOM ignored); text is handed to :mod:`csv` only up to the last line
break that is outside a quoted field (an even number of ``"`` so far), so quoted fields may span lines and
chunks.
"""

from __future__ import annotations

import codecs
import csv
import io

#: Text that may wait for a closing quote before the upload is rejected.
MAX_PENDING_CHARS = 1_000_000


class CsvError(ValueError):
    """The upload is not a CSV we can read."""


class CsvStream:
    """Feed chunks of bytes, get complete records."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self._pending = ""

    def feed(self, chunk: bytes, *, final: bool = False) -> list[list[str]]:
        """Records completed by ``chunk`` (all that remain when ``final``)."""
        try:
            self._pending += self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise CsvError("the file is not UTF-8 text") from None
        if final:
            text, self._pending = self._pending, ""
            if text.count('"') % 2:
                raise CsvError("a quoted field is never closed")
        else:
            cut = self._pending.rfind("\n")
            if cut < 0 or self._pending.count('"', 0, cut) % 2:
                if len(self._pending) > MAX_PENDING_CHARS:
                    raise CsvError("a line (or quoted field) is too long")
                return []
            text, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        try:
            return [record for record in csv.reader(io.StringIO(text, newline="")) if record]
        except csv.Error as exc:
            raise CsvError(f"malformed CSV: {exc}") from None
