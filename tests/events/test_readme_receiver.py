"""The README's Python receiver, run as written, receives and verifies a real delivery (and refuses a forged one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from libs.db.engine import Database
from libs.ingest.process import process_webhook
from libs.ops.processes import ROOT, free_port
from tests.events.conftest import make_endpoint
from tests.faults.support import wait_until
from tests.ingest import factories as f


def answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status: the README's server has no GET route)."""
    try:
        httpx.get(url, timeout=1.0)
    except httpx.HTTPError:
        return False
    return True


def readme_receiver() -> str:
    """The Python code block of the README's "Receiving events" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Receiving events") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no Python receiver in the README"
    return match.group(1)


@pytest.fixture
def receiver_script(tmp_path: Path) -> Path:
    path = tmp_path / "receiver.py"
    path.write_text(readme_receiver())
    return path


@pytest.fixture
def running_receiver(receiver_script: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    port = free_port()
    state: dict[str, Any] = {}
    env = {**os.environ, "PORT": str(port)}

    def start(secret: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, str(receiver_script)],
            env={**env, "ZAPQ_WEBHOOK_SECRET": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        state["process"] = process
        return process

    state["start"] = start
    yield f"http://127.0.0.1:{port}", state
    process = state.get("process")
    if process is not None:
        process.terminate()
        process.wait(10)


@pytest.mark.usefixtures("policy")
def test_the_readme_receiver_verifies_real_deliveries(
    api: TestClient, db: Database, running_receiver: tuple[str, dict[str, Any]]
) -> None:
    url, state = running_receiver
    company = api.post("/api/companies", json={"name": "Acme"}).json()
    api.post(
        "/api/connections",
        json={"company_id": company["id"], "provider": "meta", "phone_number_id": "pn-readme", "access_token": "t"},
    )
    endpoint = make_endpoint(api, company["id"], url + "/zapq")
    process = state["start"](endpoint["secret"])
    wait_until(lambda: answers(url), timeout=10, what="the README receiver to listen")
    # A forged delivery is refused
    forged_headers = {"webhook-id": "evt_x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
    forged = httpx.post(url + "/zapq", content=b'{"type":"x"}', headers=forged_headers)
    assert forged.status_code == 400
    # When a customer writes, the receiver prints the verified event
    body = f.meta_payload(
        f.meta_change(number_id="pn-readme", messages=[f.meta_message("wamid.README", "text", {"body": "hi there"})])
    )
    process_webhook(db, f.webhook_row(db, f.dumps(body)))
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("message.received "), line
    assert "hi there" in line
