"""Meta's media limits per MIME type (``whatsapp-more.md`` §2) and a light check that bytes match their type.

=========  ==========================================================================  ==============
kind       MIME types                                                                  largest file
=========  ==========================================================================  ==============
image      image/jpeg, image/png                                                       5 MB
video      video/mp4, video/3gpp                                                       16 MB
audio      audio/aac, audio/amr, audio/mpeg, audio/mp4, audio/ogg                      16 MB
document   text/plain, application/pdf, MS Office (doc, docx, xls, xlsx, ppt, pptx)    100 MB
sticker    image/webp                                                                  100 KB static, 500 KB animated
=========  ==========================================================================  ==============
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.media.errors import MediaTooLargeError, UnsupportedMediaTypeError

MB = 1024 * 1024
KB = 1024


@dataclass(frozen=True, slots=True)
class MediaLimit:
    """The WhatsApp message kind a MIME type is sent as, and its largest file."""

    kind: str
    max_bytes: int


IMAGE = MediaLimit("image", 5 * MB)
VIDEO = MediaLimit("video", 16 * MB)
AUDIO = MediaLimit("audio", 16 * MB)
DOCUMENT = MediaLimit("document", 100 * MB)
#: Animated stickers may reach 500 KB; static ones 100 KB (:func:`check_bytes` tells them apart).
STICKER = MediaLimit("sticker", 500 * KB)
STATIC_STICKER_MAX = 100 * KB

LIMITS: dict[str, MediaLimit] = {
    "image/jpeg": IMAGE,
    "image/png": IMAGE,
    "video/mp4": VIDEO,
    "video/3gpp": VIDEO,
    "audio/aac": AUDIO,
    "audio/amr": AUDIO,
    "audio/mpeg": AUDIO,
    "audio/mp4": AUDIO,
    "audio/ogg": AUDIO,
    "text/plain": DOCUMENT,
    "application/pdf": DOCUMENT,
    "application/msword": DOCUMENT,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DOCUMENT,
    "application/vnd.ms-excel": DOCUMENT,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": DOCUMENT,
    "application/vnd.ms-powerpoint": DOCUMENT,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": DOCUMENT,
    "image/webp": STICKER,
}
#: The largest file of any type (the upload body's own cap adds room for the multipart framing).
LARGEST = max(limit.max_bytes for limit in LIMITS.values())

#: Magic numbers of the types whose first bytes are unambiguous: a file declared as one must start so.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "application/pdf": (b"%PDF-",),
}
#: Bytes needed by :func:`check_bytes`.
HEAD_BYTES = 32


def normalize(mime: str | None) -> str:
    """``"Image/JPEG; charset=x"`` → ``"image/jpeg"``."""
    return (mime or "").split(";", 1)[0].strip().lower()


def limit_for(mime: str | None) -> MediaLimit:
    """The limit of ``mime``; :class:`UnsupportedMediaTypeError` (415) for a type Meta refuses."""
    limit = LIMITS.get(normalize(mime))
    if limit is None:
        raise UnsupportedMediaTypeError(
            f"media type {normalize(mime) or '(none)'!r} is not accepted; use one of: {', '.join(sorted(LIMITS))}"
        )
    return limit


def animated_webp(head: bytes) -> bool:
    """Whether a WebP file (its first bytes) is animated: an extended ``VP8X`` header with the animation flag."""
    return len(head) >= 21 and head[12:16] == b"VP8X" and bool(head[20] & 0x02)


def check_bytes(mime: str, head: bytes, size: int) -> None:
    """Refuse a file whose first bytes are not of ``mime`` (415) or, for a sticker, too large for its kind (413)."""
    mime = normalize(mime)
    signatures = SIGNATURES.get(mime)
    if signatures is not None and not head.startswith(signatures):
        raise UnsupportedMediaTypeError(f"the file's content is not {mime}")
    if mime == "image/webp":
        if not (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            raise UnsupportedMediaTypeError("the file's content is not image/webp")
        if not animated_webp(head) and size > STATIC_STICKER_MAX:
            raise MediaTooLargeError(f"a static sticker may be at most {STATIC_STICKER_MAX} bytes, this one is {size}")


#: Message types that carry a file: Meta's names, and the bridge's (Baileys) message keys.
MEDIA_KINDS: dict[str, str] = {
    **{kind: kind for kind in ("image", "video", "audio", "document", "sticker")},
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "documentWithCaptionMessage": "document",
    "stickerMessage": "sticker",
}


def media_kind(message_type: str | None) -> str | None:
    """The media kind of a message type (``"imageMessage"`` → ``"image"``); ``None`` for one without a file."""
    return MEDIA_KINDS.get(message_type or "")
