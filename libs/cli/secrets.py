"""``zapq secrets rotate|new-key``: the keys credentials are encrypted with at rest (:mod:`libs.secrets`).

Rotating a key: put a new key first in ``ZAPQ_SECRETS_KEYS`` (``zapq secrets new-key``), keeping the old
ones after it, and restart the processes; run ``zapq secrets rotate`` (every stored credential re-encrypted
under the new key); then drop the old keys from the list. Works on this session's Postgres directly.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from libs.cli.output import EXIT_FAILED, EXIT_OK
from libs.settings import Settings


def cmd_secrets_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Re-encrypt every stored credential under the newest key."""
    from libs.connections.rotation import rotate_credentials
    from libs.db.engine import Database
    from libs.secrets import CannotDecryptError, Secrets

    secrets = Secrets(settings.secrets_key_list)
    db = Database.from_settings(settings, pool_size=1)
    try:
        rotated = rotate_credentials(db, secrets)
    except CannotDecryptError as exc:
        print(f"zapq: rotation stopped: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        db.close()
    print(f"re-encrypted {rotated.values} credentials of {rotated.connections} connections under the newest key")
    return EXIT_OK


def cmd_secrets_new_key(args: argparse.Namespace, settings: Settings) -> int:
    """Print a new random key for ``ZAPQ_SECRETS_KEYS``."""
    from libs.secrets import generate_key

    print(generate_key())
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``secrets rotate|new-key`` to the ``zapq`` subparsers."""
    secrets = sub.add_parser("secrets", help="keys of the credentials encrypted at rest")
    commands = secrets.add_subparsers(dest="secrets_command", required=True)
    rotate = commands.add_parser("rotate", help="re-encrypt every stored credential under the newest key")
    rotate.set_defaults(func=cmd_secrets_rotate)
    new_key = commands.add_parser("new-key", help="print a new key for ZAPQ_SECRETS_KEYS")
    new_key.set_defaults(func=cmd_secrets_new_key)
