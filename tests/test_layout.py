"""Each service started alone declares (and so consumes) only its own queues."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from libs.ops.processes import ROOT

EXPECTED = {
    "services.webhook_ingest": {"webhooks"},
    "services.message_sender": {"messages.urgent", "messages", "messages.low"},
    "services.campaign_runner": {"campaigns"},
    "services.scheduler": {"dead-letter", "maintenance"},
    "services.event_dispatcher": {"event-delivery"},
    "services.media_fetcher": {"media"},
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_service_declares_only_its_queues(module: str) -> None:
    script = (
        f"import json, dramatiq, {module}; b = dramatiq.get_broker(); "
        "print(json.dumps({'queues': sorted(b.get_declared_queues()), "
        "'actors': sorted(b.get_declared_actors())}))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    declared = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(declared["queues"]) == EXPECTED[module]


def test_no_service_imports_another_service() -> None:
    for path in (ROOT / "services").rglob("*.py"):
        own = path.relative_to(ROOT / "services").parts[0]
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import services.", "from services.")):
                target = stripped.split()[1].split(".")[1]
                assert target == own, f"{path} imports services.{target}"
