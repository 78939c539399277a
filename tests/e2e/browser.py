"""Driving the dashboard in a real browser: Debian's chromium through Playwright (no ``playwright install``).

CI needs ``apt-get install -y chromium`` and ``pip install playwright==1.65.2``; the browser is launched through
``executable_path``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long the page may take to show a change (it refreshes every 2 s).
UI_TIMEOUT_MS = 20_000
#: Why a browser test is skipped on this machine, or ``None``.
NO_BROWSER = None if Path(CHROMIUM).exists() else "needs Debian's chromium: apt-get install chromium"
