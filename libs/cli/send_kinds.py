"""``zapq send`` options for the message kinds besides text and template (:mod:`libs.messages.kinds`).

A medium is given by URL (``https://…`` → ``link``), by a local file (uploaded first through ``POST /api/media``,
then sent by the id it answers: :func:`upload_files`), or by media id (anything else → ``id``)::

    zapq send --company 1 --to +1… --image https://x.io/a.jpg --caption "New shoe"
    zapq send --company 1 --to +1… --document 1013859600285441 --filename invoice.pdf
    zapq send --company 1 --to +1… --document ./invoice.pdf --caption "Your invoice"
    zapq send --company 1 --to +1… --audio https://x.io/note.ogg --voice
    zapq send --company 1 --to +1… --text "Move it?" --buttons "Yes,No"
    zapq send --company 1 --to +1… --text "Pick one" --list "Options=Express,Ground"
    zapq send --company 1 --to +1… --location 37.7580,-122.4253,HQ
    zapq send --company 1 --to +1… --react wamid.X:👍        (``wamid.X:`` removes the reaction)
    zapq send --company 1 --to +1… --text Sure --reply-to wamid.X

The API validates every limit (422 with the field and the limit → exit 2).
"""

from __future__ import annotations

import argparse
import mimetypes
from pathlib import Path
from typing import Any

from libs.cli.api import ApiClient
from libs.cli.output import UsageError

MEDIA = ("image", "video", "audio", "document", "sticker")


def add_arguments(parser: argparse.ArgumentParser, content: Any) -> None:
    """The kind options: the content ones join ``content`` (one of them is required), modifiers go on ``parser``."""
    for kind in MEDIA:
        content.add_argument(f"--{kind}", metavar="URL|FILE|MEDIA_ID", help=f"send an {kind}" if kind[0] in "aeiou"
                             else f"send a {kind}")  # fmt: skip
    content.add_argument("--location", metavar="LAT,LNG[,NAME]", help="send a map pin")
    content.add_argument("--react", metavar="WAMID:EMOJI", help="react to a message (no emoji: remove the reaction)")
    parser.add_argument("--caption", help="caption of an image, video or document")
    parser.add_argument("--filename", help="file name the recipient sees (--document)")
    parser.add_argument("--voice", action="store_true", help="--audio as a voice note (OGG/Opus)")
    parser.add_argument("--buttons", metavar="A,B,C", help="with --text: up to 3 reply buttons")
    parser.add_argument("--list", metavar="BUTTON=ROW,ROW…", help="with --text: a list of up to 10 rows")
    parser.add_argument("--reply-to", metavar="WAMID", help="quote this message (its wamid / key id)")


def local_file(value: str) -> Path | None:
    """The file ``value`` names on this machine, or ``None`` (a URL, a media id)."""
    if "://" in value:
        return None
    path = Path(value).expanduser()
    return path if path.is_file() else None


def upload_files(args: argparse.Namespace, api: ApiClient) -> None:
    """Replace a media option that names a local file by the id of that file uploaded to zapq
    (``POST /api/media``, which checks its size and type against Meta's limits: 413 / 415 → exit 2)."""
    for kind in MEDIA:
        value = getattr(args, kind, None)
        path = local_file(value) if value is not None else None
        if path is None:
            continue
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as file:
            stored = api.call(
                "POST", "/api/media", params={"company_id": args.company}, files={"file": (path.name, file, mime)}
            )
        setattr(args, kind, stored["id"])
        if kind == "document" and args.filename is None:
            args.filename = path.name  # what the recipient sees, unless told otherwise


def media_ref(value: str) -> dict[str, Any]:
    """``{"link": value}`` for a URL (anything with ``://``), else ``{"id": value}``."""
    return {"link": value} if "://" in value else {"id": value}  # the API refuses a link that is not http(s)


def _check_modifiers(args: argparse.Namespace, kind: str | None) -> None:
    if args.caption is not None and kind not in ("image", "video", "document"):
        raise UsageError("--caption goes with --image, --video or --document")
    if args.filename is not None and kind != "document":
        raise UsageError("--filename goes with --document")
    if args.voice and kind != "audio":
        raise UsageError("--voice goes with --audio")
    if (args.buttons is not None or args.list is not None) and args.text is None:
        raise UsageError("--buttons and --list need --text (the message body)")
    if args.buttons is not None and args.list is not None:
        raise UsageError("give --buttons or --list, not both")


def _interactive(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.buttons is not None:
        titles = [title.strip() for title in args.buttons.split(",") if title.strip()]
        buttons = [{"type": "reply", "reply": {"id": title, "title": title}} for title in titles]
        return {"type": "button", "body": {"text": args.text}, "action": {"buttons": buttons}}
    if args.list is not None:
        button, sep, rows = args.list.partition("=")
        if not sep:
            raise UsageError("--list is BUTTON=ROW,ROW… (e.g. Options=Express,Ground)")
        items = [{"id": row.strip(), "title": row.strip()} for row in rows.split(",") if row.strip()]
        action = {"button": button.strip(), "sections": [{"rows": items}]}
        return {"type": "list", "body": {"text": args.text}, "action": action}
    return None


def _location(value: str) -> dict[str, Any]:
    parts = [part.strip() for part in value.split(",", 2)]
    try:
        location: dict[str, Any] = {"latitude": float(parts[0]), "longitude": float(parts[1])}
    except (ValueError, IndexError):
        raise UsageError("--location is LAT,LNG[,NAME] (e.g. 37.7580,-122.4253,HQ)") from None
    if len(parts) == 3 and parts[2]:
        location["name"] = parts[2]
    return location


def kind_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``MessageIn`` fields of the kind options (empty for a plain text or template), and ``context``."""
    kind = next((k for k in (*MEDIA, "location", "react") if getattr(args, k) is not None), None)
    _check_modifiers(args, kind)
    fields: dict[str, Any] = {}
    if kind in MEDIA:
        medium: dict[str, Any] = media_ref(getattr(args, kind))
        if args.caption is not None:
            medium["caption"] = args.caption
        if args.filename is not None:
            medium["filename"] = args.filename
        if args.voice:
            medium["voice"] = True
        fields[kind] = medium
    elif kind == "location":
        fields["location"] = _location(args.location)
    elif kind == "react":
        target, sep, emoji = args.react.rpartition(":")
        if not sep or not target:
            raise UsageError("--react is WAMID:EMOJI (WAMID: alone removes the reaction)")
        fields["reaction"] = {"message_id": target, "emoji": emoji}
    elif (interactive := _interactive(args)) is not None:
        fields["interactive"] = interactive
    if args.reply_to is not None:
        fields["context"] = {"message_id": args.reply_to}
    return fields
