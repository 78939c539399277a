"""A ``multipart/form-data`` upload parsed as it streams in (python-multipart's push parser): the ``file`` part
goes straight into a spool file, small text fields are kept. No part is ever whole in memory."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from libs.api.http import ApiError
from libs.media.spool import Spool

#: Largest text field kept (``type``, ``messaging_product``, …).
MAX_FIELD_BYTES = 1024
#: Most text fields accepted besides the file.
MAX_FIELDS = 16


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; 415 for any other body."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(415, "send the file as multipart/form-data with a 'file' part")
    return boundary


@dataclass
class Upload:
    """What an upload held: the file part's MIME type and name, and the text fields."""

    mime_type: str | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    files: int = 0


class _Parser:
    """The parser's callbacks: headers of each part, then its data to the spool (``file``) or a field."""

    def __init__(self, target: Spool, on_file: Callable[[Upload], int]) -> None:
        self.target = target
        self.on_file = on_file
        self.upload = Upload()
        self._headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._part: str | None = None  # "file", a field name, or None while in headers
        self._field = bytearray()

    def on_part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._field = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            self.upload.files += 1
            if self.upload.files > 1:
                raise ApiError(400, "send exactly one 'file' part")
            filename = options.get(b"filename")
            self.upload.filename = filename.decode("utf-8", "replace")[:255] if filename else None
            self.upload.mime_type = self._headers.get(b"content-type", b"").decode("latin-1") or None
            self.target.limit = self.on_file(self.upload)
            self._part = "file"
        else:
            if len(self.upload.fields) >= MAX_FIELDS:
                raise ApiError(400, f"more than {MAX_FIELDS} form fields")
            self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.target.write(data[start:end])
            return
        self._field += data[start:end]
        if len(self._field) > MAX_FIELD_BYTES:
            raise ApiError(413, f"form field {self._part!r} longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._part and self._part != "file":
            self.upload.fields[self._part] = self._field.decode("utf-8", "replace")
        self._part = None


async def read_upload(
    chunks: AsyncIterable[bytes], boundary: bytes, target: Spool, on_file: Callable[[Upload], int]
) -> Upload:
    """Parse the body ``chunks``: the ``file`` part into ``target`` (its limit set by ``on_file``, called with
    the part's headers before any of its data: it may refuse the type), fields kept; 400 without a file."""
    callbacks = _Parser(target, on_file)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": callbacks.on_part_begin,
            "on_header_field": callbacks.on_header_field,
            "on_header_value": callbacks.on_header_value,
            "on_header_end": callbacks.on_header_end,
            "on_headers_finished": callbacks.on_headers_finished,
            "on_part_data": callbacks.on_part_data,
            "on_part_end": callbacks.on_part_end,
        },
    )
    async for chunk in chunks:
        parser.write(chunk)
    parser.finalize()
    if callbacks.upload.files != 1:
        raise ApiError(400, "send the file as a multipart part named 'file'")
    return callbacks.upload
