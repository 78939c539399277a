"""The ``zapq`` command line: its parser and entry point (the ``zapq`` console script, ``python -m libs.cli``).

Each command module registers its own subcommands (:data:`COMMANDS`, in the order ``zapq --help`` lists
them); what they share — exit codes, the usage error, output helpers — is in :mod:`libs.cli.output`.
Failures become exit codes here, in one place: 0 success, 1 operation failed, 2 bad usage or input
(argparse's convention), 3 not found. (The commands that drive the API map its answers in
:mod:`libs.cli.api`.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from libs.cli import (
    campaign,
    company,
    connection,
    demo,
    dev,
    dlq,
    endpoints,
    events,
    keys,
    limits,
    message,
    migrate,
    optouts,
    secrets,
    send,
    stats,
    templates,
)
from libs.cli.output import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, UsageError
from libs.errors import RecordNotFoundError, ZapqError
from libs.settings import SettingsError, load_settings
from libs.timeparse import TimeParseError

#: Each module's ``register(subparsers)``, in the order of ``zapq --help``.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    migrate.register,  # migrate
    dev.register,  # dev up|seed|webhook
    company.register,  # company create|list
    connection.register,  # connection create|list|patch|webhook-secret
    limits.register,  # limits
    message.register,  # message ID
    stats.register,  # stats, job, top
    campaign.register,  # campaign create|import|start|pause|resume|cancel|status|list
    send.register,  # send, retry
    optouts.register,  # opt-outs list|add|rm|import
    templates.register,  # templates sync|list
    events.register,  # events tail|list|show
    endpoints.register,  # endpoints list|add|rm|test|enable|disable|rotate-secret|replay
    demo.register,  # demo
    dlq.register,  # dlq list|show|replay|purge
    keys.register,  # keys create|list|revoke, audit
    secrets.register,  # secrets rotate|new-key
)


def build_parser() -> argparse.ArgumentParser:
    """The ``zapq`` argument parser."""
    parser = argparse.ArgumentParser(prog="zapq", description="zapq: WhatsApp job processing on Dramatiq.")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zapq`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except SettingsError as exc:
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, TimeParseError) as exc:
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RecordNotFoundError as exc:
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ZapqError as exc:  # e.g. the database is unreachable: "operation failed", not a traceback
        print(f"zapq: {exc}", file=sys.stderr)
        return EXIT_FAILED
