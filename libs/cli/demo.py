"""``zapq demo``: start the system, send a signed webhook, show it processed, stop. Registered by
:func:`register`; the demo itself is :func:`libs.ops.demo.run_demo`."""

from __future__ import annotations

import argparse
from typing import Any

from libs.settings import Settings


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the end-to-end demo."""
    from libs.ops.demo import run_demo

    return run_demo(settings, keep_running=args.keep_running)


def register(sub: Any) -> None:
    """Add ``demo`` to the ``zapq`` subparsers."""
    demo = sub.add_parser("demo", help="start the system, send a signed webhook, show it processed, stop")
    demo.add_argument("--keep-running", action="store_true", help="leave the processes up until Ctrl-C")
    demo.set_defaults(func=cmd_demo)
