"""The cap on a response body once its ``Content-Encoding`` is undone, shared by every provider transport.

httpx inflates ``Content-Encoding: gzip / deflate`` without a limit, so a small compressed answer (a "zip
bomb") could take gigabytes. :func:`check_decoded_size` inflates such a body once in bounded chunks, only
counting, and fails the request past the limit; httpx then decodes it as usual.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

import httpx

INFLATE_CHUNK = 64 * 1024
"""Most bytes one decompression step may produce while a decoded size is checked."""

#: zlib window bits per content coding, as httpx's decoders use them (deflate falls back to raw deflate).
WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def check_decoded_size(headers: list[tuple[bytes, bytes]], body: bytes, limit: int, request: httpx.Request) -> None:
    """Raise ``httpx.RemoteProtocolError`` when ``body`` would inflate past ``limit`` bytes as httpx decodes it.

    The codings of every ``Content-Encoding`` header are undone last first, each in chunks of at most
    ``INFLATE_CHUNK`` bytes that are counted and dropped, so the check itself never holds more than a chunk
    per coding. A body zlib cannot decode is left to httpx, which reports it (``httpx.DecodingError``) as it
    always did; a coding that cannot be bounded (brotli, zstd, unknown ones) is refused.
    """
    codings = [
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"content-encoding"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]
    codings = [coding for coding in codings if coding != "identity"]
    if not codings:
        return
    unknown = [coding for coding in codings if coding not in WBITS]
    if unknown:
        raise httpx.RemoteProtocolError(f"Unsupported Content-Encoding {unknown[0]!r}.", request=request)
    stream: Iterable[bytes] = (body,)
    for coding in reversed(codings):
        stream = _inflate(stream, coding)
    size = 0
    try:
        for piece in stream:
            size += len(piece)
            if size > limit:
                raise httpx.RemoteProtocolError(f"Response body exceeds {limit} bytes once decoded.", request=request)
    except zlib.error:
        return


def _inflate(chunks: Iterable[bytes], coding: str) -> Iterator[bytes]:
    """Undo one content coding of ``chunks`` as httpx's decoder does, yielding at most ``INFLATE_CHUNK`` at once."""
    decompressor = zlib.decompressobj(WBITS[coding])
    first = True
    for chunk in chunks:
        data = chunk
        while True:
            try:
                out = decompressor.decompress(data, INFLATE_CHUNK)
            except zlib.error:
                if not (first and coding == "deflate"):
                    raise
                decompressor = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, as httpx falls back to
                first = False
                continue
            first = False
            if out:
                yield out
            data = decompressor.unconsumed_tail
            if decompressor.eof:
                return  # httpx ignores bytes after the end of the stream too
            if not data and len(out) < INFLATE_CHUNK:
                break  # this chunk is used up and nothing is pending
    tail = decompressor.flush()
    if tail:
        yield tail
