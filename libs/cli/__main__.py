"""``python -m libs.cli …``: the ``zapq`` command without its console script."""

from __future__ import annotations

import sys

from libs.cli.main import main

sys.exit(main())
