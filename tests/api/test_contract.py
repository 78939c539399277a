"""The API contract: schemathesis with every check and the stateful phase finds nothing.

The same command as README "API contract" (``schemathesis.toml`` at the repository root holds its settings),
against the real app on this session's database, with fewer examples per operation and a fixed seed so it is
deterministic and bounded (about a minute). Every check: a server error, an undocumented status, content type
or header, a response off its schema, a schema-valid request refused (422 for a rule only the code knows), a
schema-invalid one accepted, a missing ``Allow`` on 405, use after delete, a created resource not readable, a
route answering without auth. The stateful phase follows ``/openapi.json``'s links (company → connection →
message, campaign, webhook endpoint, opt-out, key) so ``{id}`` routes see ids that exist.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libs.api.app import create_app
from libs.settings import Settings
from tests.fakes.server import running_app

ROOT = Path(__file__).resolve().parents[2]
#: Examples per operation in the suite (the full run in the README: 150).
EXAMPLES = 10
#: The coverage phase (every boundary of every parameter: about two minutes here, whatever the examples) runs in
#: the full command only.
PHASES = "fuzzing,stateful"
#: Long-polls up to 30 s per example (its cursor and filters are covered by tests/events/test_feed.py), and the
#: live stream never ends: both run in the full command only (the stream not even there).
SLOW = ("--exclude-operation-id", "list_events", "--exclude-operation-id", "stream_events")


def schemathesis_run(url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``st run`` against ``url`` with every check (the README command), from the repository root."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "-H", f"Authorization: Bearer {token}",
        "--checks", "all", "--seed", "7", "--generation-deterministic",
        "--request-timeout", "35", "--workers", "1", "--no-color", *extra,
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)


@pytest.mark.timeout(300)
def test_schemathesis_with_every_check_and_the_stateful_phase_finds_nothing(
    settings: Settings, db: Any, broker: Any
) -> None:
    # Given the API on this session's database (no rate limit on the bootstrap token)
    with running_app(create_app(settings)) as url:
        # When schemathesis runs every phase and every check over /openapi.json
        run = schemathesis_run(url, settings.api_token, "--max-examples", str(EXAMPLES), "--phases", PHASES, *SLOW)
    # Then it finds nothing, the stateful phase included
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "✅ Fuzzing" in run.stdout and "✅ Stateful" in run.stdout, run.stdout[-3000:]
